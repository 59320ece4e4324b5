"""The SavedModel the server runs: the workdir's export, made or remade when it is stale."""
import os

from seq2seq.infer import export
from seq2seq.runtime import workdir as workdir_lib


def export_folder(run_config):
  """--export_dir, or the default WORKDIR/export."""
  return run_config.decode.export_dir or workdir_lib.export_dir(run_config.train.workdir)


def stale_reason(run_config):
  """Why the export must be made again, or "" when it can be served as it is.

  An export is stale when it is missing, predates the per-call signatures (no
  `export.INFO_FILE` of the current format), was made from other --checkpoint or
  --average_checkpoints settings, or is older than a checkpoint file of the workdir (so a
  checkpoint written since could be the one now picked).
  """
  folder = export_folder(run_config)
  info = export.read_info(folder)
  if info is None:
    if not os.path.exists(folder):
      return f"there is no export in {folder}"
    return f"{folder} is not an export of this version (it lacks {export.INFO_FILE})"
  decode = run_config.decode
  if (info.get("checkpoint"), info.get("average_checkpoints")) != (
      decode.checkpoint, decode.average_checkpoints):
    return (f"{folder} was exported with --checkpoint={info.get('checkpoint')} "
            f"--average_checkpoints={info.get('average_checkpoints')}")
  exported = os.path.getmtime(os.path.join(folder, export.INFO_FILE))
  newer = [path for path in workdir_lib.checkpoint_files(run_config.train.workdir)
           if os.path.getmtime(path) > exported and "damaged" not in path.split(os.sep)]
  if newer:
    return f"{folder} is older than the checkpoint file {newer[-1]}"
  return ""


def ensure_export(run_config, log=print):
  """The export folder of `run_config`, exported first (`export.export_trained`) when
  `stale_reason` gives one.

  Raises:
    export.ExportError, restore.NoCheckpoint: as `export.export_trained`.
  """
  reason = stale_reason(run_config)
  if not reason:
    log(f"serving {export_folder(run_config)} (newer than every checkpoint)")
    return export_folder(run_config)
  log(f"exporting first: {reason}")
  return export.export_trained(run_config, log)
