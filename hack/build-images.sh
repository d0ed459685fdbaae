#!/usr/bin/env bash
# Builds the container images without any registry:
#   sidemount/base:bookworm   a minbase Debian from mmdebstrap, piped to docker import
#   sidemount/NAME:latest     every images/NAME/Dockerfile (or only the NAMEs given),
#                             FROM the base, with apt inside the build on the host network
# Every image carries the label io.sidemount.inputs=<sha256 of what it is made from>,
# and is rebuilt only when that hash changes, so a second run is quick.
#   hack/build-images.sh                # the base and all images
#   hack/build-images.sh vcs-sshfs      # the base and sidemount/vcs-sshfs
set -euo pipefail
cd "$(dirname "$0")/.."
. hack/lib.sh

require_root
install_packages mmdebstrap
command -v docker >/dev/null || die "docker is missing: install docker.io and start dockerd"
timeout 30 docker info >/dev/null || die "dockerd does not answer on its socket"

label=io.sidemount.inputs
base=sidemount/base:bookworm

tmp=$(mktemp -d /tmp/sidemount-images.XXXXXX)
trap 'rm -rf "$tmp"' EXIT

# The apt sources of this machine, passed to mmdebstrap one file each.
mapfile -t sources < <(apt_source_files)
[ ${#sources[@]} -gt 0 ] || die "no apt sources"

# The base recipe: what mmdebstrap makes (the sources are appended) and the
# configuration docker import gives it (the PATH and CMD of the debian image).
# The merged-usr hook makes the /bin -> usr/bin links itself and installs
# usr-is-merged, so the usrmerge package and the perl it pulls in (~55 MB) stay out,
# as in the debian image.
base_recipe=(
  mmdebstrap --variant=minbase --include=ca-certificates
  --hook-dir=/usr/share/mmdebstrap/hooks/merged-usr bookworm -
)
base_changes=(
  'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin'
  'CMD ["bash"]'
)

# inputs_label IMAGE: the io.sidemount.inputs label of IMAGE, empty when IMAGE is missing.
inputs_label() {
  timeout 30 docker image inspect -f "{{index .Config.Labels \"$label\"}}" "$1" 2>/dev/null || true
}

# image_id IMAGE: the id of IMAGE, empty when it is missing.
image_id() {
  timeout 30 docker image inspect -f '{{.Id}}' "$1" 2>/dev/null || true
}

# remove_old ID: drop an image that a rebuild replaced (left alone when a container
# or another tag still uses it).
remove_old() {
  if [ -n "$1" ]; then
    timeout 60 docker image rm "$1" >/dev/null 2>&1 || true
  fi
}

build_base() {
  local hash old start
  hash=$({
    printf '%s\n' "${base_recipe[@]}" "${base_changes[@]}"
    for f in "${sources[@]}"; do printf '== %s\n' "$f"; cat "$f"; done
  } | sha256sum | cut -d' ' -f1)
  if [ "$(inputs_label "$base")" = "$hash" ]; then
    step "$base: up to date"
    return
  fi
  step "building $base (mmdebstrap | docker import)"
  old=$(image_id "$base")
  start=$SECONDS
  local changes=(--change "LABEL $label=$hash")
  for c in "${base_changes[@]}"; do changes+=(--change "$c"); done
  # mmdebstrap writes the tarball to stdout; its log is kept and shown only on failure.
  if ! timeout 1800 "${base_recipe[@]}" "${sources[@]}" 2>"$tmp/mmdebstrap.log" |
    timeout 600 docker import "${changes[@]}" - "$base" >/dev/null; then
    tail -n 30 "$tmp/mmdebstrap.log" >&2
    die "building $base failed"
  fi
  remove_old "$old"
  echo "$base: built in $((SECONDS - start))s"
}

# build_image NAME: sidemount/NAME:latest from images/NAME/.
build_image() {
  local name=$1 image=sidemount/$1:latest ctx=images/$1 hash old id start bin
  if grep -q '^COPY sidemount ' "images/$name/Dockerfile"; then
    # The context is the directory plus the static binary, as ./sidemount.
    bin=$(bash hack/build-static.sh | tail -1)
    ctx=$tmp/$name
    mkdir -p "$ctx"
    cp -a "images/$name/." "$ctx/"
    cp "$bin" "$ctx/sidemount"
  fi
  # The hash covers the base image and every file of the context (names and content).
  hash=$({
    image_id "$base"
    (cd "$ctx" && find . -type f -print0 | LC_ALL=C sort -z | xargs -0 sha256sum)
  } | sha256sum | cut -d' ' -f1)
  if [ "$(inputs_label "$image")" = "$hash" ]; then
    step "$image: up to date"
    return
  fi
  step "building $image"
  old=$(image_id "$image")
  start=$SECONDS
  # -q prints only the image id; the build log (which docker -q prints on failure)
  # and the CLI's notices go to a file shown only when the build fails. --force-rm
  # also removes the container of a failed step.
  if ! id=$(timeout 1800 docker build -q --force-rm --network host --label "$label=$hash" -t "$image" "$ctx" \
    2>"$tmp/build.log"); then
    tail -n 40 "$tmp/build.log" >&2
    die "building $image failed"
  fi
  [ "$old" = "$id" ] || remove_old "$old"
  echo "$image: built in $((SECONDS - start))s ($id)"
}

# The images to build: the NAMEs given, or every images/*/Dockerfile.
names=("$@")
if [ ${#names[@]} -eq 0 ]; then
  for d in images/*/Dockerfile; do
    d=${d%/Dockerfile}
    names+=("${d#images/}")
  done
fi
for name in "${names[@]}"; do
  [ -f "images/$name/Dockerfile" ] || die "no image $name: images/$name/Dockerfile is missing"
done

build_base
for name in "${names[@]}"; do
  build_image "$name"
done
