"""The imports obey the layers that BUILD.md draws.

Each sub-package of `seq2seq` may import only from the layers listed for it (and from itself);
`ops` imports nothing of `seq2seq`; absl flags stop at `train.py`. Parsed from the source, so a
new import that breaks the picture fails here, naming the file and line.
"""
import ast
import pathlib
import re

import pytest

ROOT = pathlib.Path(__file__).resolve().parent.parent


def _allowed_from_build_md():
  """layer -> the layers it may import, read from BUILD.md's table of layers ("top" is
  seq2seq/*.py outside the sub-packages), so that the picture and this test cannot drift."""
  name = lambda cell: {"ops": "ops", "seq2seq": "top"}.get(cell, cell.replace("seq2seq.", ""))
  allowed = {}
  for line in (ROOT / "BUILD.md").read_text(encoding="utf-8").splitlines():
    cells = [c.strip() for c in line.strip().strip("|").split("|")]
    if len(cells) == 3 and re.fullmatch(r"`(ops|seq2seq(\.\w+)?)`( \(.*\))?", cells[0]):
      layer = name(re.match(r"`([\w.]+)`", cells[0]).group(1))
      allowed[layer] = {name(n) for n in re.findall(r"`([\w.]+)`", cells[2])}
  return allowed


ALLOWED = _allowed_from_build_md()

# The reference layer (what a researcher reads and extends) never reaches into the fast path,
# which ALLOWED already says for `nn`; named here too, with the fast ops outside the package.
REFERENCE_MODULES = ("seq2seq/nn/cells.py", "seq2seq/nn/unroll.py", "seq2seq/nn/attention.py")


def _layer_of_file(path):
  parts = path.relative_to(ROOT).parts
  if parts[0] == "ops":
    return "ops"
  return parts[1] if len(parts) > 2 else "top"


def _layer_of_module(dotted):
  """The layer of an imported module name, or None when it is not the project's."""
  parts = dotted.split(".")
  if parts[0] == "ops":
    return "ops"
  if parts[0] != "seq2seq" or len(parts) == 1:
    return None
  return parts[1] if (ROOT / "seq2seq" / parts[1]).is_dir() else "top"


def _imports(path):
  """(line, dotted module name) of each import in `path`."""
  for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
    if isinstance(node, ast.Import):
      for alias in node.names:
        yield node.lineno, alias.name
    elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
      for alias in node.names:  # `from seq2seq import nn` names a package, `from seq2seq.nn import cells` a module
        yield node.lineno, f"{node.module}.{alias.name}"


def _library_files():
  for package in ("seq2seq", "ops"):
    yield from sorted((ROOT / package).rglob("*.py"))


def test_every_sub_package_has_a_layer():
  packages = {p.name for p in (ROOT / "seq2seq").iterdir()
              if p.is_dir() and (p / "__init__.py").exists()}
  assert {"ops", "top"} <= set(ALLOWED), "BUILD.md's table of layers was not found"
  assert packages <= set(ALLOWED), f"add {packages - set(ALLOWED)} to BUILD.md's table of layers"


def test_imports_point_down_the_layers():
  broken = []
  for path in _library_files():
    layer = _layer_of_file(path)
    for line, module in _imports(path):
      target = _layer_of_module(module)
      if target and target != layer and target not in ALLOWED[layer]:
        broken.append(f"{path.relative_to(ROOT)}:{line}: {layer} imports {module} ({target})")
  assert not broken, "imports against the layers:\n" + "\n".join(broken)


@pytest.mark.parametrize("relative", REFERENCE_MODULES)
def test_reference_model_never_imports_the_fast_path(relative):
  path = ROOT / relative
  fast = [f"{relative}:{line}: {module}" for line, module in _imports(path)
          if _layer_of_module(module) == "fast" or module.startswith("ops.recurrent")]
  assert not fast, "\n".join(fast)


def test_flags_stop_at_the_entry_points():
  users = [f"{path.relative_to(ROOT)}:{line}" for path in _library_files()
           for line, module in _imports(path) if module.startswith("absl.flags")
           or module == "absl.flags"]
  assert not users, "absl flags belong in train.py only: " + ", ".join(users)


def test_the_checker_sees_a_wrong_import(tmp_path):
  """The parse above finds both import forms (a check that cannot fail proves nothing)."""
  source = tmp_path / "m.py"
  source.write_text("from seq2seq.train import loop\nimport seq2seq.step.train_step\n")
  assert [_layer_of_module(m) for _, m in _imports(source)] == ["train", "step"]
