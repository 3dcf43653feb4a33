"""The base and the tuned model answering the same prompts, for a run's comparison page.

Run by a job in the run's project with the trainer's Python (torch, transformers, peft):

    python compare.py PROMPTS_JSON BASE_DIR TUNED_DIR OUT_JSON

The tuned folder is a registered result: full weights (config.json at its root), or a LoRA
adapter alone (adapter_config.json), loaded on the base. Greedy decoding, so that the same
prompts give the same answers again. Nothing of Suanli is imported: this file runs in the
trainer's environment, as the user's account.
"""

import json
import sys
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

MAX_NEW_TOKENS = 96


def load(folder: Path, base: Path):
    if (folder / "config.json").exists():
        return AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32), folder
    from peft import PeftModel

    model = AutoModelForCausalLM.from_pretrained(base, dtype=torch.float32)
    tokenizer_home = folder if (folder / "tokenizer_config.json").exists() else base
    return PeftModel.from_pretrained(model, folder), tokenizer_home


def answer(model, tokenizer, prompt: str) -> str:
    if tokenizer.chat_template:
        messages = [{"role": "user", "content": prompt}]
        text = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    else:
        text = prompt
    inputs = tokenizer(text, return_tensors="pt")
    with torch.no_grad():
        output = model.generate(**inputs, max_new_tokens=MAX_NEW_TOKENS, do_sample=False)
    return tokenizer.decode(output[0][inputs["input_ids"].shape[1] :], skip_special_tokens=True)


def main() -> None:
    prompts_file, base, tuned, out = sys.argv[1:5]
    prompts = json.loads(Path(prompts_file).read_text(encoding="utf-8"))
    answers = {}
    for side, folder in (("base", Path(base)), ("tuned", Path(tuned))):
        model, tokenizer_home = (
            load(folder, Path(base)) if side == "tuned" else load(folder, folder)
        )
        tokenizer = AutoTokenizer.from_pretrained(tokenizer_home)
        model.eval()
        answers[side] = [answer(model, tokenizer, prompt) for prompt in prompts]
        print(f"{side}: {len(prompts)} answers", flush=True)
    rows = [
        {"prompt": prompt, "base": answers["base"][i], "tuned": answers["tuned"][i]}
        for i, prompt in enumerate(prompts)
    ]
    Path(out).write_text(json.dumps(rows, ensure_ascii=False), encoding="utf-8")


if __name__ == "__main__":
    main()
