"""
Build gradelib/_data/stdlib_docstrings.txt.xz: an English text corpus made of
the docstrings of Python's standard library (PSF licence, see
gradelib/_data/LICENSE-PSF.txt).

The shipped file was produced by CPython 3.11.7 (Linux, x86_64) with

    python -I -S tools/build_corpus.py

-I -S (isolated, no site) keeps site-packages out of sys.path, so nothing installed
in a virtual environment (e.g. setuptools' distutils shim) can leak into the corpus.
Another Python version gives a slightly different corpus; that is fine, but the
shipped file is what every student sees, so rebuild only on purpose.

Why docstrings: they are real, edited English prose about programming, they ship
with every Python installation (no download, clear licence) and there are
enough of them for a character-level language model (~1.3 MB).
"""

import argparse
import contextlib
import importlib
import inspect
import io
import lzma
import pkgutil
import re
import sys
import sysconfig
import unicodedata
import warnings
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_OUTPUT = REPO_ROOT / "gradelib" / "_data" / "stdlib_docstrings.txt.xz"

# Top-level modules we never import: GUIs, test suites, things that print, open a
# browser, start a REPL or are deprecated shims whose content depends on what is
# installed (distutils is replaced by setuptools' copy in many environments).
SKIPPED_TOP_LEVEL = {
    "antigravity", "this", "idlelib", "tkinter", "turtle", "turtledemo", "test",
    "lib2to3", "ensurepip", "distutils", "pydoc_data", "encodings", "readline",
    "rlcompleter", "msilib", "msvcrt", "winreg", "winsound", "nt",
}
# Submodule names that run code on import (``python -m``) or hold tests.
SKIPPED_SUBMODULE_NAMES = {"__main__", "test", "tests", "idle_test"}

MIN_DOCSTRING_CHARS = 80
MIN_DOCSTRING_WORDS = 12
# A paragraph is kept as prose when most of its visible characters are letters;
# tables, grammars and code listings fall well below this.
MIN_LETTER_FRACTION = 0.6


def stdlib_module_names():
    """Sorted names of all importable public standard-library modules, submodules included."""
    stdlib_dir = Path(sysconfig.get_paths()["stdlib"]).resolve()
    names = []
    for top in sorted(sys.stdlib_module_names):
        if top.startswith("_") or top in SKIPPED_TOP_LEVEL:
            continue
        module = quiet_import(top)
        if module is None:
            continue
        names.append(top)
        names.extend(public_submodules(module, stdlib_dir))
    return names


def public_submodules(package, stdlib_dir):
    """Recursively list public submodules of a package, sorted, staying inside the stdlib directory."""
    found = []
    for path in getattr(package, "__path__", []):
        if not Path(path).resolve().is_relative_to(stdlib_dir):
            return []
    infos = sorted(pkgutil.iter_modules(getattr(package, "__path__", [])), key=lambda info: info.name)
    for info in infos:
        if info.name.startswith("_") or info.name in SKIPPED_SUBMODULE_NAMES:
            continue
        full_name = f"{package.__name__}.{info.name}"
        module = quiet_import(full_name)
        if module is None:
            continue
        found.append(full_name)
        if info.ispkg:
            found.extend(public_submodules(module, stdlib_dir))
    return found


def quiet_import(name):
    """Import a module with warnings and any printing suppressed; None if it cannot be imported here."""
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()), \
            contextlib.redirect_stderr(io.StringIO()):
        warnings.simplefilter("ignore")
        try:
            return importlib.import_module(name)
        except BaseException:  # platform-specific modules raise ImportError, a few raise others
            return None


def documented_objects(module):
    """Yield the module, then its own public classes/functions and their public methods, in sorted order."""
    yield module
    for name, obj in sorted(vars(module).items()):
        if name.startswith("_") or not is_defined_here(obj, module):
            continue
        if inspect.isclass(obj):
            yield obj
            for member_name, member in sorted(vars(obj).items()):
                if member_name.startswith("_"):
                    continue
                # Plain attributes (ints, strs) would return their type's docstring.
                if inspect.isroutine(member) or isinstance(member, (property, classmethod, staticmethod)):
                    yield member
        elif inspect.isroutine(obj):
            yield obj


def is_defined_here(obj, module):
    """True if obj belongs to this module rather than being re-exported from another public one.

    Objects implemented in a private C accelerator (io.TextIOWrapper lives in _io)
    count as the public module's, since the private module itself is skipped.
    """
    owner = getattr(obj, "__module__", None)
    if not isinstance(owner, str):
        return False
    return owner == module.__name__ or owner.rpartition(".")[2].startswith("_")


def prose_only(docstring):
    """Drop doctest, code and table paragraphs; return what is left."""
    kept = []
    for paragraph in re.split(r"\n\s*\n", docstring):
        lines = paragraph.strip("\n").splitlines()
        if not lines or any(line.lstrip().startswith((">>>", "...", "$ ")) for line in lines):
            continue
        visible = [ch for ch in paragraph if not ch.isspace()]
        letters = sum(ch.isalpha() for ch in visible)
        if visible and letters / len(visible) >= MIN_LETTER_FRACTION:
            kept.append("\n".join(lines))
    return "\n\n".join(kept)


def to_ascii(text):
    """Fold accents etc. to ASCII and keep only printable characters plus newlines."""
    text = unicodedata.normalize("NFKD", text).encode("ascii", "ignore").decode("ascii")
    text = text.replace("\t", "    ")
    text = "".join(ch for ch in text if ch == "\n" or " " <= ch <= "~")
    return "\n".join(line.rstrip() for line in text.splitlines()).strip("\n")


def build_corpus():
    """Return the corpus text and the number of modules it was collected from."""
    module_names = stdlib_module_names()
    seen = {}  # dict, not set: keeps first-seen order, so the output is deterministic
    for name in module_names:
        module = sys.modules[name]
        for obj in documented_objects(module):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                try:
                    docstring = inspect.getdoc(obj)
                except Exception:
                    docstring = None
            if not docstring:
                continue
            text = to_ascii(prose_only(docstring))
            if len(text) >= MIN_DOCSTRING_CHARS and len(text.split()) >= MIN_DOCSTRING_WORDS:
                seen.setdefault(text, None)
    return "\n\n".join(seen) + "\n", len(module_names)


def main():
    parser = argparse.ArgumentParser(description="Build the stdlib docstring corpus shipped in gradelib/_data.")
    parser.add_argument("--output", type=Path, default=DEFAULT_OUTPUT)
    args = parser.parse_args()

    corpus, num_modules = build_corpus()
    args.output.parent.mkdir(parents=True, exist_ok=True)
    # preset 9 | extreme: the file is built once and shipped, so spend the time once.
    compressed = lzma.compress(corpus.encode("ascii"), preset=9 | lzma.PRESET_EXTREME)
    args.output.write_bytes(compressed)
    print(f"Python {sys.version.split()[0]}: {num_modules} modules, "
          f"{len(corpus):,} characters, {len(compressed):,} bytes compressed -> {args.output}")


if __name__ == "__main__":
    main()
