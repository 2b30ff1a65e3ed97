"""Settings the benchmarks share, so that every record that says "fine-tuned alike" is."""

#: The 5-minute fine-tuning recipe of docs/records/finetune.json (``tcompress finetune --lr 1.5e-3
#: --schedule cosine --precision bf16 --train-samples 3000 --cache --recalibrate 512``), as
#: keyword arguments of ``tcompress.finetune``; steps are given by each benchmark.
FIVE_MINUTE = dict(
    lr=1.5e-3,
    schedule="cosine",
    precision="bf16",
    train_samples=3000,
    cache=True,
    recalibrate=512,
    eval_samples=8,
    workers=2,
)
