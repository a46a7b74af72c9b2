# Installs what the signature tests (tests/signature.rs, tests/http.rs, tests/senders.rs) need:
# the `standardwebhooks` package from PyPI, the official library hookbridge's signatures are
# checked against in both directions.
# Sourced by .ci/test: it returns, never exits, and does nothing when all is in place.
python_setup() {
  local py
  py=$(command -v python3 || command -v python) || {
    echo "python: python3 is needed (apt-get install python3 python3-pip)" >&2
    return 1
  }
  if ! "$py" -c 'import standardwebhooks' >/dev/null 2>&1; then
    # Debian's own Python refuses plain installs (PEP 668): try the user site, then say so.
    "$py" -m pip install -q standardwebhooks \
      || "$py" -m pip install -q --user standardwebhooks \
      || "$py" -m pip install -q --user --break-system-packages standardwebhooks \
      || return 1
  fi
  echo "python: $("$py" --version 2>&1), standardwebhooks $("$py" -c 'import importlib.metadata as m; print(m.version("standardwebhooks"))')"
}
python_setup || { echo "python: setup failed" >&2; return 1; }
