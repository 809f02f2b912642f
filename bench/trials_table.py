"""Print the recorded five-minute trials (bench/results/five_minute_trials.jsonl) as a Markdown table."""

import json
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "results" / "five_minute_trials.jsonl"


def main() -> None:
    trials = [json.loads(line) for line in RESULTS.read_text().splitlines() if line.strip()]
    print("| trial | overrides of charlm/recipes/micro.toml at the time | val bits/byte | tokens/s | steps |")
    print("|---|---|---:|---:|---:|")
    for t in trials:
        overrides = " ".join(f"`{o}`" for o in t["overrides"]) or "(none)"
        if t.get("note"):  # e.g. a prototype whose config key no longer exists
            overrides += f" ({t['note']})"
        print(f"| {t['name']} | {overrides} | {t['val_bpb']:.4f} | {t['tokens_per_s']:,} | {t['steps']:,} |")


if __name__ == "__main__":
    main()
