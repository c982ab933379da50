# Sourced by the scripts that need root: runs the calling script again as
# root — under sudo when it is installed, else it says to run it as root (a
# Debian machine used as root often has no sudo). Already root: nothing.
if [ "$(id -u)" != 0 ]; then
  if command -v sudo >/dev/null 2>&1; then
    exec sudo --preserve-env=PATH,HOME,CARGO_HOME,RUSTUP_HOME,DROVER_KEEP_HOSTS "$0" "$@"
  fi
  echo "$(basename "$0"): needs root; run it as root (sudo is not installed)" >&2
  exit 1
fi
