#!/usr/bin/env bash
# Installs what bench/run.py compares against: the Python references (the `bench` extra) and the
# libvips and ImageMagick command lines (Debian packages). Run as root inside the project's venv.
set -euo pipefail
cd "$(dirname "$0")/.."
pip install -q -e '.[bench]'
if command -v apt-get >/dev/null; then
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq libvips-tools imagemagick >/dev/null
fi
vips --version || true
magick -version 2>/dev/null | head -1 || convert -version | head -1
