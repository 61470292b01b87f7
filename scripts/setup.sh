#!/usr/bin/env bash
# Create .venv with the CPU build of torch and this project (editable) plus its dev tools.
# Re-running when nothing changed returns in about a second (a stamp holds the inputs' hash).
set -euo pipefail
cd "$(dirname "$0")/.."

VENV="${VENV:-.venv}"
PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
TORCH_SPEC="${TORCH_SPEC:-torch==2.13.0}"   # CPU build; letting pip choose pulls a multi-GB CUDA build

stamp_inputs() { cat pyproject.toml scripts/setup.sh; echo "$TORCH_SPEC"; "$PYTHON" --version; }
want="$(stamp_inputs | sha256sum | cut -d' ' -f1)"
stamp="$VENV/.rag-setup-stamp"
if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/rag" ]; then
  exit 0
fi

"$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info >= (3, 11) else "rag needs Python 3.11 or newer")'
[ -x "$VENV/bin/python" ] || "$PYTHON" -m venv "$VENV"
PIP=("$VENV/bin/python" -m pip --disable-pip-version-check --quiet)
"${PIP[@]}" install --upgrade pip
if ! "$VENV/bin/python" -c 'import torch' >/dev/null 2>&1; then
  echo "setup: installing $TORCH_SPEC (CPU build)"
  "${PIP[@]}" install "$TORCH_SPEC"
fi
echo "setup: installing rag and its dependencies"
"${PIP[@]}" install -e ".[dev,eval,langchain,ollama,openai,serve,engine]"
# OCR of scanned PDFs needs Tesseract, a system package: installed here when this runs as root on
# Debian/Ubuntu; otherwise say how (rag then indexes everything else and names the scanned files).
if ! command -v tesseract >/dev/null 2>&1; then
  if [ "$(id -u)" -eq 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing tesseract-ocr (OCR of scanned PDFs)"
    { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends tesseract-ocr; } >/dev/null \
      || echo "setup: could not install tesseract-ocr; scanned PDFs will be skipped (install it: apt-get install tesseract-ocr)"
  else
    echo "setup: Tesseract not found; to index scanned PDFs install it (Debian/Ubuntu: sudo apt-get install tesseract-ocr)"
  fi
fi
echo "$want" > "$stamp"
echo "setup: done ($VENV)"
