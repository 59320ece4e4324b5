"""Cells named by import path, `--cell=package.module:ClassName`, or by the short name of a
cell of `seq2seq.contrib` (`config.NAMED_CELLS`, e.g. `--cell=layer_norm_lstm`).

Any class that meets the cell contract can be trained without editing the engine:

    cell = ClassName(num_units, **options)    # options: those of dtype, seed, name,
                                              # forget_bias, per_gate_hidden_gradient
                                              # that its __init__ names
    output, new_state = cell(inputs, state)   # inputs [B, I] -> output [B, H], H = num_units
    state = cell.initial_state(batch_size, dtype)   # a nest (namedtuple) of [B, ...] tensors
    cell.output_size                          # H

The cell is a `tf.Module` (so that its variables are trained and checkpointed) and computes
in its inputs' dtype: under --precision=bf16 its inputs and state are bfloat16 while its
variables stay in `dtype` (float32), as the built-in cells cast them (`cells.LSTMCell`). It
needs no subclassing: `CustomCell` adapts it to `cells.RNNCore`, the base the wrappers
(dropout, stacking, residual, attention) take, and the reference unroll runs it one `__call__`
per step. (A subclass of `cells.RNNCore` is used as it is.) A state
field named `hidden` also gets --variational_dropout's recurrent mask. The module is imported
from `sys.path`, to which the current directory is added (after the entries already there).
"""
import importlib
import inspect
import os
import sys
import traceback

import tensorflow as tf

from seq2seq import config as config_lib
from seq2seq import errors
from seq2seq.nn import cells

# The keyword options the engine offers a cell's constructor; each goes only to a constructor
# that names it.
OPTIONS = ("dtype", "seed", "name", "forget_bias", "per_gate_hidden_gradient")

CONTRACT = ("__call__(inputs, state) -> (output, new_state), initial_state(batch_size, dtype) "
            "and output_size")


class CellError(errors.UserError, ValueError):
  """A --cell=package.module:ClassName that cannot be imported, built or run as a cell."""


class CustomCell(cells.RNNCore):
  """A cell of the plain contract as an `RNNCore`.

  Delegates `__call__`, `initial_state` and `output_size` to `cell`; the reference unroll
  runs it one step at a time (the fast layer takes only the built-in cores). The cell's
  variables are tracked under this core (as `cell`), so checkpoints and `trainable_variables`
  see them.

  Args:
    cell: the user's cell (a `tf.Module`).
    dtype: its variable dtype: the state's dtype when `initial_state` is given none.
  """

  def __init__(self, cell, dtype=tf.float32, name=None):
    super().__init__(name=name)
    self.cell = cell
    self.dtype = tf.as_dtype(dtype)

  @property
  def output_size(self):
    return int(self.cell.output_size)

  def initial_state(self, batch_size, dtype=None):
    return self.cell.initial_state(batch_size, dtype or self.dtype)

  def __call__(self, inputs, state):
    return self.cell(inputs, state)


def make_custom_cell(spec, num_units, where="", **options):
  """The cell that "package.module:ClassName" names, as an `RNNCore`.

  Built as `ClassName(num_units, **those options its __init__ names)`. A subclass of
  `cells.RNNCore` is returned as it is; any other class is
  wrapped in `CustomCell`.

  Args:
    spec: "package.module:ClassName".
    num_units: H.
    where: how messages name the setting (default "--cell=SPEC").
    **options: the engine's keyword options (`OPTIONS`).

  Raises:
    CellError: the module or class cannot be imported, or the constructor raised.
  """
  cell = _construct(spec, num_units, where or f"--cell={spec}", options)
  if isinstance(cell, cells.RNNCore):
    return cell
  return CustomCell(cell, options.get("dtype", tf.float32), name=options.get("name"))


def _construct(spec, num_units, where, options):
  """`ClassName(num_units, **those of `options` its __init__ names)`; CellError if it raises."""
  cls = load_class(spec, where)
  accepted = named_options(cls)
  chosen = {key: value for key, value in options.items() if key in accepted}
  try:
    return cls(num_units, **chosen)
  except Exception as e:  # pylint: disable=broad-except
    arguments = ", ".join([str(num_units)] + [f"{k}={v!r}" for k, v in chosen.items()])
    raise CellError(f"{where}: {cls.__name__}({arguments}) raised {_summary(e)}") from None


def load_class(spec, where=""):
  """The class that "package.module:ClassName" (or a short name of `config.NAMED_CELLS`)
  names, imported from sys.path and the current directory. Raises CellError (naming `where`,
  default "--cell=SPEC") when it cannot be."""
  where = where or f"--cell={spec}"
  spec = config_lib.NAMED_CELLS.get(spec, spec)
  module_name, _, class_name = spec.partition(":")
  module = _import(module_name, where)
  cls = getattr(module, class_name, None)
  if cls is None:
    defined = sorted(name for name, value in vars(module).items()
                     if inspect.isclass(value) and value.__module__ == module.__name__)
    raise CellError(f"{where}: module {module_name!r} ({module.__file__}) has no {class_name!r}; "
                    f"it defines {', '.join(defined) or 'no class'}")
  if not inspect.isclass(cls):
    raise CellError(f"{where}: {spec} is a {type(cls).__name__}, not a class; name a class with "
                    f"{CONTRACT}")
  return cls


def _import(module_name, where):
  """`module_name` imported, the current directory on sys.path; CellError if it fails."""
  here = os.getcwd()
  if here not in sys.path and "" not in sys.path:
    sys.path.append(here)
  try:
    return importlib.import_module(module_name)
  except ModuleNotFoundError as e:
    if e.name and (module_name == e.name or module_name.startswith(e.name + ".")):
      raise CellError(
          f"{where}: no module named {e.name!r} on sys.path or in the current directory "
          f"({here}); run from the folder that holds it, or add that folder to PYTHONPATH"
      ) from None
    raise CellError(f"{where}: importing module {module_name!r} raised {_summary(e)}") from None
  except Exception as e:  # pylint: disable=broad-except
    raise CellError(f"{where}: importing module {module_name!r} raised {_summary(e)}") from None


def named_options(cls):
  """The names the constructor of `cls` takes by keyword (none if it cannot be inspected). A
  `**kwargs` catch-all is not counted: it often forwards to `tf.Module`, which takes `name` only."""
  try:
    parameters = inspect.signature(cls).parameters.values()
  except (TypeError, ValueError):
    return set()
  return {p.name for p in parameters
          if p.kind in (p.POSITIONAL_OR_KEYWORD, p.KEYWORD_ONLY)}


def _summary(error):
  """'Type: message (file, line N)' of an exception raised by a user's code, the place being
  the innermost frame outside installed packages (the user's own file, as a rule)."""
  text = f"{type(error).__name__}: {error}"
  if isinstance(error, SyntaxError) and error.filename:
    return f"{text} ({error.filename}, line {error.lineno})"
  frames = [frame for frame in traceback.extract_tb(error.__traceback__)
            if "-packages" not in frame.filename and not frame.filename.startswith("<")
            and frame.filename != __file__]
  return f"{text} ({frames[-1].filename}, line {frames[-1].lineno})" if frames else text


def check(model_config, compute_dtype, config_file=""):
  """Imports a custom --cell and builds one step of it, so that a cell that does not meet the
  contract stops the run before any data is read. Nothing to do for lstm and gru.

  The step: `initial_state(2, compute_dtype)` and inputs [2, E] (E = --embedding_size) in
  `compute_dtype` give an output [2, H] in that dtype and a new state of the initial one's
  structure, shapes and dtypes (H = --hidden_size); with --encoder=bi every state leaf is
  [2, H] (the bridge maps each one). The step is built in a graph of its own and not run:
  nothing starts TensorFlow's eager runtime, which a multi-worker or TPU strategy must set up
  before any op runs.

  Args:
    model_config: a `ModelConfig`.
    compute_dtype: the activations' dtype (bfloat16 with --precision=bf16).
    config_file: the workdir's config.json when the cell was read from it (named in messages).

  Raises:
    CellError: naming --cell, the class and what is missing or wrong.
  """
  spec = model_config.cell
  if not config_lib.is_custom_cell(spec):
    return
  where = f"--cell={spec}" + (f" (recorded in {config_file})" if config_file else "")
  with tf.Graph().as_default():
    cell = _construct(spec, model_config.hidden_size, where,
                      dict(dtype=tf.float32, seed=0, name="check",
                           forget_bias=model_config.forget_bias))
    _check_parts(cell, where, model_config)
    core = cell if isinstance(cell, cells.RNNCore) else CustomCell(cell)
    _check_one_step(core, type(cell).__name__, where, model_config, compute_dtype)


def _check_parts(cell, where, model_config):
  """The contract's methods, `output_size` == H, and the options the flags need."""
  name, units = type(cell).__name__, model_config.hidden_size
  missing = _missing(cell)
  if missing:
    raise CellError(f"{where}: {name} has no {' or '.join(missing)}; a cell needs {CONTRACT}")
  if (model_config.per_gate_hidden_gradient
      and "per_gate_hidden_gradient" not in named_options(type(cell))):
    raise CellError(f"--per_gate_hidden_gradient: {where} builds {name}, whose __init__ takes "
                    "no per_gate_hidden_gradient; drop the flag (it is an LSTM and GRU option)")
  try:
    size_ok = int(cell.output_size) == units
  except (TypeError, ValueError):  # e.g. a TensorShape
    size_ok = False
  _require(size_ok, where, f"{name}(num_units={units}).output_size is {cell.output_size!r}, "
                           f"not {units}")


def _check_one_step(core, name, where, model_config, compute_dtype):
  """One step of `core` (built, not run) on inputs [2, E] from `initial_state(2)`, both in
  `compute_dtype`: an output [2, H] and a new state like the initial one."""
  units, embedding = model_config.hidden_size, model_config.embedding_size
  try:
    state = core.initial_state(2, compute_dtype)
    inputs = tf.fill([2, embedding], tf.constant(0.5, compute_dtype))
    result = core(inputs, state)
  except Exception as e:  # pylint: disable=broad-except
    hint = ("; a cell computes in its inputs' dtype (bfloat16 under --precision=bf16: cast "
            "the variables to inputs.dtype)" if compute_dtype != tf.float32 else "")
    raise CellError(
        f"{where}: one step of {name} on inputs [2, {embedding}] {compute_dtype.name} and "
        f"initial_state(2, {compute_dtype.name}) raised {_summary(e)}{hint}") from None
  _require(isinstance(result, tuple) and len(result) == 2, where,
           f"one step of {name} returned a {type(result).__name__}, not (output, new_state)")
  _check_step(name, where, units, compute_dtype, result[0], state, result[1],
              bridged=model_config.encoder == "bi")


def _missing(cell):
  """What `cell` lacks of the contract (names), including being a `tf.Module`."""
  missing = [] if isinstance(cell, tf.Module) else ["tf.Module base (its variables would not "
                                                    "be trained or saved)"]
  missing += [] if callable(cell) else ["__call__"]
  missing += [] if callable(getattr(cell, "initial_state", None)) else ["initial_state"]
  missing += [] if hasattr(cell, "output_size") else ["output_size"]
  return missing


def _require(condition, where, problem):
  if not condition:
    raise CellError(f"{where}: {problem}; a cell needs {CONTRACT}, its output [B, num_units] "
                    "in its inputs' dtype and its new state shaped like the initial one")


def _check_step(name, where, units, dtype, output, state, new_state, bridged):
  """Checks one step's output [2, H] and new state against the contract."""
  _require(isinstance(output, tf.Tensor) and output.shape == [2, units]
           and output.dtype == dtype, where,
           f"one step of {name} returned an output {_describe(output)}, not [2, {units}] "
           f"{dtype.name}")
  try:
    tf.nest.assert_same_structure(state, new_state)
  except (TypeError, ValueError):
    _require(False, where, f"one step of {name} returned a state structured unlike "
                           f"initial_state's ({type(new_state).__name__} for "
                           f"{type(state).__name__})")
  for old, new in zip(tf.nest.flatten(state), tf.nest.flatten(new_state)):
    _require(isinstance(old, tf.Tensor) and isinstance(new, tf.Tensor)
             and old.shape.rank and old.shape[0] == 2 and new.shape == old.shape
             and new.dtype == old.dtype == dtype, where,
             f"one step of {name} turned a state leaf {_describe(old)} into {_describe(new)} "
             f"(leaves are [B, ...] in the inputs' dtype {dtype.name})")
    _require(not bridged or old.shape == [2, units], where,
             f"--encoder=bi bridges each state leaf [B, {units}] of the two directions, and "
             f"{name}'s state has a leaf {_describe(old)}")


def _describe(value):
  """'[2, 8] bfloat16' for a tensor; the type's name for anything else."""
  if isinstance(value, tf.Tensor):
    return f"{value.shape.as_list()} {value.dtype.name}"
  return type(value).__name__
