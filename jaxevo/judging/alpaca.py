"""AlpacaEval-format outputs: a JSON list of {"instruction", "output", "generator", ...} records
(AlpacaEval's `model_outputs.json`), read and written, and paired with a baseline's by instruction.

    rows = read_outputs("baseline.json")          # also reads JSONL, one record a line
    write_outputs("model.json", [{"instruction": q, "output": a, "generator": "round1"}])
    pairs = pair_outputs(model_rows, baseline_rows)   # [(model_row, baseline_row)] in model order
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Sequence

from jaxevo.errors import ConfigError

REQUIRED = ("instruction", "output")


def read_outputs(path: str | Path) -> list[dict]:
    """Records of an AlpacaEval outputs file (a JSON list) or of a JSONL file. Each needs
    `instruction` and `output` (strings); `generator` defaults to the file's stem."""
    path = Path(path)
    if not path.is_file():
        raise ConfigError(f"{path}: no such outputs file")
    text = path.read_text()
    if text.lstrip().startswith("["):
        try:
            rows = json.loads(text)
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}:{e.lineno}: not valid JSON ({e.msg})") from None
        where = [f"{path}: record {i}" for i in range(len(rows))]
    else:
        rows, where = [], []
        for n, line in enumerate(text.splitlines(), 1):
            if not line.strip():
                continue
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError as e:
                raise ConfigError(f"{path}:{n}: not valid JSON ({e.msg})") from None
            where.append(f"{path}:{n}")
    out = []
    for row, at in zip(rows, where):
        if not isinstance(row, dict):
            raise ConfigError(f"{at}: a record is an object with 'instruction' and 'output'")
        missing = [k for k in REQUIRED if not isinstance(row.get(k), str)]
        if missing:
            raise ConfigError(f"{at}: needs string field(s) {missing} (AlpacaEval format: "
                              f"instruction, output, generator)")
        out.append({**row, "generator": row.get("generator", path.stem)})
    return out


def write_outputs(path: str | Path, rows: Sequence[dict]) -> None:
    """Write records as an AlpacaEval outputs file (a JSON list, indented), atomically: a killed
    write leaves the previous file whole."""
    for i, row in enumerate(rows):
        missing = [k for k in (*REQUIRED, "generator") if k not in row]
        if missing:
            raise ConfigError(f"outputs record {i} lacks {missing}")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(list(rows), indent=2, ensure_ascii=False) + "\n")
    os.replace(tmp, path)


def pair_outputs(model_rows: Sequence[dict], baseline_rows: Sequence[dict]) -> list[tuple[dict, dict]]:
    """(model, baseline) record pairs matched by `instruction`, in the model rows' order. Every
    model instruction must have a baseline answer; the first baseline answer of an instruction
    asked twice is used."""
    base: dict[str, dict] = {}
    for row in baseline_rows:
        base.setdefault(row["instruction"], row)
    missing = [r["instruction"] for r in model_rows if r["instruction"] not in base]
    if missing:
        raise ConfigError(f"{len(missing)} instruction(s) have no baseline output, e.g. "
                          f"{missing[0][:80]!r}: give baseline outputs for the same instructions")
    return [(r, base[r["instruction"]]) for r in model_rows]
