"""What a run's training batches are made of, kept in the workdir so that a resumed run can
tell whether it sees the batches an uninterrupted run would have seen.

    WORKDIR/data_fingerprint.json   {"runs": [{"from_step": s, "flags": {...},
                                               "examples": sha256, "batches_per_epoch": n}]}

The batches of an epoch follow from the training examples, the flags in `_flags` and the data
seed; the data seed is kept in the checkpoint, so a resume reuses it whatever --seed says. A
run records its fingerprint, with the step it starts from, when it starts. A resume at step S
compares its own with that of the run that wrote the checkpoint: the latest one that started
before S (a run that stopped before its first checkpoint wrote none, so its record is not the
one compared). Another --data (fine-tuning) is legitimate, so a difference is reported, not
refused: the model continues from the checkpoint, the batches from there on are those of the
new data. Changes that make a checkpoint unusable are refused earlier
(`workdir.check_or_save_config`).
"""
import hashlib
import json
import os

import numpy as np

SAME_ORDER = "with the same data order as an uninterrupted run"


def path(workdir):
  return os.path.join(workdir, "data_fingerprint.json")


def _flags(run_config, schedule):
  """{flag: value} of the flags that shape this run's batches."""
  data, train = run_config.data, run_config.train
  flags = {"data": data.data, "lowercase": data.lowercase, "filters": data.filters,
           "batch_size": train.batch_size}
  if run_config.model.model == "lm":
    flags["num_steps"] = data.num_steps
    return flags
  flags.update(min_length=data.min_length, max_length=data.max_length,
               bucket_boundaries=",".join(map(str, data.boundaries())),
               input_pipeline=data.input_pipeline, seed=train.seed)
  if hasattr(schedule, "path"):  # streamed with tf.data: the shuffle buffer orders it too
    flags["shuffle_buffer"] = data.shuffle_buffer
  return flags


def examples_digest(schedule):
  """A sha256 of what `schedule` batches: a `data.BatchSchedule`'s encoded pairs, an
  `input_pipeline.DatasetSchedule`'s file(s), an `lm_run.WindowSchedule`'s windows; None for
  another schedule. One pass over data the run has read already (or streams every epoch)."""
  digest = hashlib.sha256()
  if hasattr(schedule, "examples"):
    for source, target in schedule.examples:
      for ids in (source, target):
        digest.update(np.asarray(ids, np.int64).tobytes() + b"|")
  elif hasattr(schedule, "windows"):
    for inputs, targets in schedule.windows:
      for ids in (inputs, targets):
        digest.update(np.ascontiguousarray(ids).tobytes())
  elif hasattr(schedule, "path"):  # a split file, or the list of a sharded split's files
    for name in [schedule.path] if isinstance(schedule.path, str) else schedule.path:
      with open(name, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
          digest.update(block)
  else:
    return None
  return digest.hexdigest()


def fingerprint(run_config, schedule):
  return {"flags": _flags(run_config, schedule), "examples": examples_digest(schedule),
          "batches_per_epoch": schedule.batches_per_epoch}


def _load(workdir):
  """The runs recorded in `workdir`, oldest first; None if there is no readable record."""
  try:
    with open(path(workdir), encoding="utf-8") as f:
      runs = json.load(f).get("runs")
  except (OSError, ValueError, AttributeError):
    return None
  if not isinstance(runs, list) or not all(
      isinstance(run, dict) and isinstance(run.get("from_step"), int)
      and isinstance(run.get("flags"), dict) for run in runs):
    return None
  return runs


def _save(workdir, record):
  tmp = path(workdir) + ".tmp"
  with open(tmp, "w", encoding="utf-8") as f:
    json.dump(record, f, indent=2, sort_keys=True)
  os.replace(tmp, path(workdir))


def changes(before, now):
  """What differs between two fingerprints, as phrases; [] if nothing does."""
  found = []
  # The same examples under another path (a moved folder) are the same data.
  moved = now["examples"] is not None and before.get("examples") == now["examples"]
  for name, value in now["flags"].items():
    if name in before["flags"] and before["flags"][name] != value:
      if name == "seed" or (name == "data" and moved):
        continue  # seed: the checkpoint's data seed applies (see `resume_note`)
      found.append(f"--{name}: {before['flags'][name]!r} -> {value!r}")
  if before.get("examples") != now["examples"] and not any(
      c.startswith(("--data:", "--lowercase:", "--filters:", "--min_length:", "--max_length:"))
      for c in found):
    found.append(f"the content of --data={now['flags']['data']} changed")
  if before.get("batches_per_epoch") != now["batches_per_epoch"]:
    found.append(f"{before.get('batches_per_epoch')} batches an epoch -> "
                 f"{now['batches_per_epoch']}")
  return found


def resume_note(run_config, schedule, resumed_at, read_from, write_to):
  """Records this run's fingerprint in `write_to` and says what a resume's data order is.

  Args:
    run_config: this run's RunConfig (its flags).
    schedule: the training schedule (`examples_digest` names the kinds).
    resumed_at: the step of the checkpoint the run resumes from; None for a fresh run.
    read_from, write_to: the workdir whose record is compared, and the one written (the
      same, except for multi_worker workers other than the chief).

  Returns:
    For a resume, the end of its log line: `SAME_ORDER`, or what changed since the run that
    wrote the checkpoint and what that means; "" for a fresh run.
  """
  now = dict(fingerprint(run_config, schedule), from_step=resumed_at or 0)
  runs = (_load(read_from) or []) if resumed_at is not None else []
  _save(write_to, {"runs": [run for run in runs if run["from_step"] < now["from_step"]] + [now]})
  if resumed_at is None:
    return ""
  # A checkpoint at step S > 0 holds steps of the last run that started before S; one at step
  # 0 (stopped before its first step) holds none, and is compared with a run started at 0.
  writers = [run for run in runs if run["from_step"] < max(resumed_at, 1)]
  before = writers[-1] if writers else None
  if before is None:
    return (f"with the data order of an uninterrupted run if --data and the flags that shape "
            f"batches ({', '.join('--' + n for n in now['flags'])}) are those of the run that "
            f"wrote the checkpoint; this workdir kept no record of them ({path(read_from)}, "
            "written from now on)")
  found = changes(before, now)
  seed = before["flags"].get("seed")
  kept_seed = (f"; --seed={now['flags']['seed']} differs from that run's {seed}, but the data "
               f"order keeps the checkpoint's data seed" if seed is not None
               and seed != now["flags"].get("seed") else "")
  if not found:
    return SAME_ORDER + kept_seed
  return ("but NOT the data order of an uninterrupted run: the training data differ from the "
          f"run that wrote the checkpoint ({'; '.join(found)}). The model, optimizer and "
          "position continue from the checkpoint; the batches from here on are those of the "
          "new data" + kept_seed)
