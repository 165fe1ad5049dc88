#!/usr/bin/env bash
# Prints the Python interpreter the tests and tools use: the first python3 on
# PATH that has `cryptography` (an independent AES-SIV to check the masking
# against), else Debian's /usr/bin/python3 (tools/test-deps.sh gives it the
# Debian packages).  Prints nothing else; cannot fail.
for py in python3 /usr/bin/python3; do
  if command -v "$py" >/dev/null 2>&1 && "$py" -c 'import cryptography' >/dev/null 2>&1; then
    command -v "$py"
    exit 0
  fi
done
echo /usr/bin/python3
