# shellcheck shell=bash
# collection_copy NAME: copies the tracked (and new, unignored) files of this checkout to
# .tmp/NAME/ansible_collections/hvmaint/libvirt, a git repository of its own, and prints that path.
# ansible-test wants the collection at that path, resolves symlinks, and takes the files to test from git.
collection_copy() {
  local copy=.tmp/$1/ansible_collections/hvmaint/libvirt
  rm -rf ".tmp/$1"
  mkdir -p "$copy"
  git ls-files -co --exclude-standard -z | xargs -0 cp --parents -t "$copy"
  (cd "$copy" && git init -q . && git add -A)
  echo "$copy"
}

# ansible-test bootstraps pip in the virtual environments it makes with a script it downloads from a host this
# machine cannot reach; put in its place one that bootstraps the same pip from the Python package index.
ansible_test_pip_standin() {
  local cache=${HOME}/.ansible/test/cache version
  mkdir -p "$cache"
  for version in 24.2 25.2; do
    cat > "$cache/get_pip_${version//./_}.py" <<PY
"""Stand-in for get-pip.py: bootstraps pip with ensurepip, then installs pip ${version} from the package index."""
import subprocess
import sys

subprocess.check_call([sys.executable, "-m", "ensurepip", "--default-pip"])
subprocess.check_call([sys.executable, "-m", "pip", "install", "-q", "--disable-pip-version-check", "pip==${version}"])
PY
  done
}
