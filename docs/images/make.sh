#!/usr/bin/env bash
# The pictures of the README's tour, made by the commands the tour shows (run from the
# repository root with convcli installed): bash docs/images/make.sh
set -euo pipefail
cd "$(dirname "$0")"
photo=../../sample_images/camera.png
convcli conv "$photo" -k sobel_x --pad-mode replicate -o edges.png --overwrite
convcli conv "$photo" -k sobel_x -k sobel_y --combine magnitude --pad-mode replicate -o strength.png --overwrite
convcli conv "$photo" -k sobel -k sobel:dir=y -k kirsch:dir=n -k kirsch:dir=s --pad-mode replicate \
  --montage --legend -o montage.png --overwrite
convcli explain --by-hand --matrix "1,2,0,1,3;4,1,1,0,2;0,2,3,1,1;1,0,2,2,0;3,1,0,1,2" -k vertical_edge \
  --gif by-hand.gif --overwrite > /dev/null
