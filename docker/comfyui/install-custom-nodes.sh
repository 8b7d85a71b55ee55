#!/bin/sh
# Fetches every custom node pack of a list (custom-nodes.txt: folder, repository, commit) at its
# pinned commit into a custom_nodes folder, and writes the requirements of all of them to one
# file for pip, with OpenCV swapped for its headless wheel.
#
#   install-custom-nodes.sh LIST CUSTOM_NODES_DIR REQUIREMENTS_OUT
#
# Why headless: opencv-python links against X11 and OpenGL libraries (libxcb, libGL) that slim
# base images lack, so `import cv2` fails there and ComfyUI drops the whole pack ("IMPORT
# FAILED"); opencv-python-headless is the same cv2 without the GUI parts, which no node uses.
set -eu
list="$1"
custom_nodes="$2"
requirements="$3"
: > "$requirements"
grep -v -e '^[[:space:]]*#' -e '^[[:space:]]*$' "$list" | while read -r name repository commit rest; do
  if [ -n "$rest" ] || ! printf '%s' "$commit" | grep -Eqx '[0-9a-f]{40}'; then
    echo "custom-nodes: $name must be pinned to a full 40-hex commit, got '$commit $rest'" >&2
    exit 1
  fi
  target="$custom_nodes/$name"
  git init -q "$target"
  git -C "$target" fetch -q --depth 1 "$repository" "$commit"
  git -C "$target" checkout -q FETCH_HEAD
  fetched="$(git -C "$target" rev-parse HEAD)"
  if [ "$fetched" != "$commit" ]; then
    echo "custom-nodes: $name: fetched $fetched, not $commit" >&2
    exit 1
  fi
  rm -rf "$target/.git"
  echo "custom-nodes: $name at $commit"
  if [ -f "$target/requirements.txt" ]; then
    # opencv-python / opencv-contrib-python (any version spec) -> their -headless twins.
    sed -E 's/^[[:space:]]*(opencv(-contrib)?-python)([^-_.A-Za-z0-9]|$)/\1-headless\3/I' \
      "$target/requirements.txt" >> "$requirements"
    echo >> "$requirements"
  fi
done
