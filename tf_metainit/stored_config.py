"""A run's stored config.gin, read as data before gin sees it.

gin parses a file with full power: `from __gin__ import dynamic_registration` lets it
import any module and bind any Python callable, and an import or include runs whatever
it names. A run directory may come from anyone, so its config.gin, and what that
includes, may hold only

  bindings    `scope/name.param = value` (or a `scope/name:` block) of a configurable
              the package registered; `NAME = value` defines a macro
  references  `@scope/name`, `@name()` to such configurables; `%MACRO` is a value
  imports     `import tf_metainit.<module> [as x]` of a module the package has already
              loaded for its configurables (gin.config_str() writes these; importing
              such a module again runs nothing)
  includes    the package's shipped configs, read by the same rules

Anything else is refused with one line naming the file, the line and what to do.
read() hands gin the checked text itself, includes replaced by the checked included
files, so gin reads nothing from disk that was not checked.
"""

import ast
import io
import os
import sys
import tokenize

import gin

PACKAGE = "tf_metainit"
_ADVICE = ("a run's stored config is read as data (bindings of the package's own "
           "configurables only). Restore the file from the run's config_history/ or "
           "retrain.")
# Tokens that only lay out a statement; gin's parser skips them too.
_LAYOUT = (tokenize.COMMENT, tokenize.NL, tokenize.INDENT, tokenize.DEDENT,
           tokenize.ENDMARKER)


class StoredConfigError(ValueError):
  pass


def read(path, gin_dir):
  """The config at `path` as file-like pieces for gin.parse_config, in the order gin
  would read them; StoredConfigError for anything but data. Call it after
  cli.common.register_configurables(): "the package's own" is gin's registry then
  (cli.common.parse_stored_config does, and first names a file that is no text)."""
  return _read(path, os.path.realpath(gin_dir), ())


def _read(path, gin_dir, including):
  including += (os.path.realpath(path),)
  with open(path, encoding="utf-8") as f:
    text = f.read()
  pieces, kept = [], []
  for statement in _statements(text, path):
    if _kind(statement) == "include":
      target = _included(statement, path, gin_dir, including)
      pieces += [_piece(path, text, kept)] if kept else []
      pieces += _read(target, gin_dir, including)
      kept = []
    else:
      _check(statement, path)
      kept.append(statement)
  return pieces + ([_piece(path, text, kept)] if kept else [])


def _statements(text, path):
  """The text's statements as token lists. Python's tokenizer is the one gin's parser
  uses, so a string or comment cannot hide a line from this reader that gin reads."""
  statements, tokens = [], []
  try:
    for token in tokenize.generate_tokens(io.StringIO(text).readline):
      if token.type == tokenize.NEWLINE:
        statements += [tokens] if tokens else []
        tokens = []
      # gin skips the blanks tokenize reports as errors before a stray character.
      elif token.type not in _LAYOUT and not token.string.isspace():
        tokens.append(token)
  except tokenize.TokenError as e:  # an unclosed bracket or string: name its statement
    line = tokens[0].start[0] if tokens else e.args[1][0]
    raise _refused(path, line, f"cannot be read as gin ({e.args[0]})") from e
  except SyntaxError as e:  # inconsistent indentation
    raise _refused(path, e.lineno, f"cannot be read as gin ({e.msg})") from e
  return statements


def _piece(path, text, statements):
  """`text` with only `statements` left (other lines blank, so gin's errors still give
  the file's own line numbers), named after the file."""
  keep = {n for s in statements for n in range(s[0].start[0], s[-1].end[0] + 1)}
  lines = io.StringIO(text).readlines()  # the lines tokenize numbered, not splitlines'
  piece = io.StringIO("".join(line if n in keep else "\n"
                              for n, line in enumerate(lines, 1)))
  piece.name = path  # gin's error locations name the file
  return piece


def _kind(statement):
  """'=', ':', 'import', 'from', 'include' or None, decided in the order gin's parser
  decides: a selector, then '=' (a binding), ':' (a block) or the keyword it is."""
  key, after = _selector(statement, 0)
  if after < len(statement) and statement[after].string in ("=", ":"):
    return statement[after].string
  return key if key in ("import", "from", "include") else None


def _check(statement, path):
  kind = _kind(statement)
  if kind in ("import", "from"):
    _check_import(statement, path)
  elif kind in ("=", ":"):
    _check_binding(statement, kind, path)
  # Anything else is not gin; gin's parser says so when it reaches the line.
  for i, token in enumerate(statement):
    if token.string == "@":
      _check_reference(statement, i, path)


def _check_binding(statement, kind, path):
  key, _ = _selector(statement, 0)
  name = key.rsplit("/", 1)[-1]
  # `NAME = value` (no parameter) defines a macro: a value, no configurable.
  if kind == "=" and "." not in name:
    return
  configurable = name.rsplit(".", 1)[0] if kind == "=" else name
  if not _is_own(configurable):
    raise _refused(path, statement[0].start[0], f"`{key}` binds {configurable}, which "
                   f"is not a {PACKAGE} configurable")


def _check_reference(statement, at, path):
  name, after = _selector(statement, at + 1)
  if not _is_own(name.rsplit("/", 1)[-1]):
    called = after < len(statement) and statement[after].string == "("
    raise _refused(path, statement[at].start[0],
                   f"`@{name}{'()' if called else ''}` is not a {PACKAGE} configurable")


def _check_import(statement, path):
  """`import M [as A]` or `from M import N [as A]`: gin imports M (M.N)."""
  module, after = _selector(statement, 1)
  if statement[0].string == "from" and after + 1 < len(statement):
    module += "." + statement[after + 1].string
  line, text = statement[0].start[0], _source(statement)
  if module.split(".")[0] == "__gin__":
    raise _refused(path, line, f"`{text}` would let the config import and call any "
                   "Python code")
  if not (_in_package(module) and module in sys.modules):
    raise _refused(path, line, f"`{text}` imports {module}, not a module of {PACKAGE} "
                   "that defines configurables")


def _included(statement, path, gin_dir, including):
  """The shipped config an include names. It is looked up in the shipped gin folder
  only: gin would try the working directory first."""
  line, text = statement[0].start[0], _source(statement)
  name = _string(statement[1:])
  if name is None:
    raise _refused(path, line, f"`{text}` is not of the form include '<task>/<name>.gin'")
  target = os.path.realpath(os.path.join(gin_dir, name))
  if os.path.commonpath([target, gin_dir]) != gin_dir:
    raise _refused(path, line, f"`{text}` is not one of the shipped configs in {gin_dir}")
  if not os.path.isfile(target):
    raise _refused(path, line, f"`{text}` names no shipped config (looked in {gin_dir})")
  if target in including:
    raise _refused(path, line, f"`{text}` includes a file that is already being read "
                   f"({' -> '.join(including)})")
  return target


def _string(tokens):
  """The value of a lone string literal, else None."""
  if len(tokens) != 1 or tokens[0].type != tokenize.STRING:
    return None
  try:
    value = ast.literal_eval(tokens[0].string)
  except (ValueError, SyntaxError):  # e.g. an f-string
    return None
  return value if isinstance(value, str) else None


def _selector(tokens, start):
  """The dotted or scoped name at tokens[start:] (NAME tokens joined by '.' or '/', as
  gin reads one) and the index after it."""
  parts, i = [], start
  while i < len(tokens) and (
      tokens[i].type == tokenize.NAME if len(parts) % 2 == 0
      else tokens[i].string in (".", "/")):
    parts.append(tokens[i].string)
    i += 1
  return "".join(parts), i


def _source(statement):
  """The statement as written, without its comment."""
  first, last = statement[0], statement[-1]
  if first.start[0] == last.end[0]:
    return first.line[first.start[1]:last.end[1]]
  return " ".join(token.string for token in statement)


def _is_own(selector):
  """Whether every configurable gin matches to `selector` is the package's. gin has no
  public lookup that answers "unknown" rather than raising, hence its registry."""
  matches = gin.config._REGISTRY.get_all_matches(selector)  # pylint: disable=protected-access
  return bool(matches) and all(_in_package(c.wrapped.__module__) for c in matches)


def _in_package(module):
  return module == PACKAGE or module.startswith(PACKAGE + ".")


def _refused(path, line, what):
  return StoredConfigError(f"{path} line {line}: {what}; {_ADVICE}")
