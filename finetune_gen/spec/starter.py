"""The commented starter spec written by `finetune-gen init`."""

STARTER_SPEC = """\
# finetune-gen spec: edit, then `finetune-gen plan THIS_FILE` and `finetune-gen generate THIS_FILE -o run/`.
# Only base_model, task_type and dataset are required; every unset value is chosen by the
# planner, which says why in `finetune-gen plan`. Values you set are never changed silently.

base_model: meta-llama/Llama-3.1-8B   # a Hugging Face id (see `finetune-gen models`) or a local folder with config.json
task_type: instruction                # instruction | chat | classification | generation

dataset:
  path: data/train.jsonl              # .json/.jsonl/.csv/.parquet relative to this file, or a hub dataset id
  format: alpaca                      # alpaca | sharegpt | chatml | custom
  train_split: 0.9
  eval_split: 0.1
  # columns: {prompt: question, response: answer}   # for format: custom
  # num_examples: 20000               # when the file is not at hand (hub ids)
  # avg_tokens_per_example: 350

training_config:
  # method: lora                      # full | lora | qlora | dora | ia3 | loha | lokr | prefix_tuning | prompt_tuning | freeze
  # epochs: 3
  # batch_size: 4                     # per-GPU micro-batch
  # learning_rate: 2.0e-4
  # max_seq_length: 2048
  # gradient_checkpointing: true
  # optimizer: adamw_torch_fused      # any Hugging Face `optim` name
  # precision: bf16                   # bf16 | fp16 | fp32
  # lora: {r: 16, alpha: 32, dropout: 0.05, target_modules: recommended}   # minimal | recommended | all | a list
  # distributed: auto                 # auto | none | ddp | fsdp | deepspeed_zero2 | deepspeed_zero3
  # cpu_offload: none                 # none | optimizer | all

hardware:                             # remove this section to get the cheapest configuration that fits
  gpus: 1
  vram_per_gpu: 24GB
  gpu_type: rtx_4090                  # see `finetune-gen models --gpus`
"""
