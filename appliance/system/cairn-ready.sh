#!/bin/bash
# After `cairn serve` starts: wait until the web UI answers, then say where to sign in on the console
# (the getty's issue text, and one line), and in the journal. The first administrator's one-time
# password is shown until it has been changed; then its file is removed.
set -euo pipefail
DATA=/var/lib/cairn
CAIRN=/opt/cairn/bin/cairn
PY=/opt/cairn/bin/python

for _ in $(seq 600); do
    "$PY" - <<'EOF' 2>/dev/null && break
import ssl, urllib.request
urllib.request.urlopen("https://127.0.0.1/healthz", context=ssl._create_unverified_context(), timeout=2).read()
EOF
    sleep 0.5
done

fingerprint=$("$PY" - "$DATA/tls/cert.pem" <<'EOF'
import sys
from cryptography import x509
from cryptography.hazmat.primitives import hashes
cert = x509.load_pem_x509_certificate(open(sys.argv[1], "rb").read())
print(":".join(f"{b:02X}" for b in cert.fingerprint(hashes.SHA256())))
EOF
)
addresses=$(ip -o addr show scope global | awk '{split($4, a, "/"); print a[1]}')
urls=$(for a in $addresses; do [[ $a == *:* ]] && echo "https://[$a]/" || echo "https://$a/"; done)
password=
if [ -f "$DATA/first-password" ]; then
    if "$CAIRN" --data "$DATA" user list --json | "$PY" -c \
        'import json, sys; sys.exit(0 if any(u["name"] == "admin" and u["must_change"] for u in json.load(sys.stdin)) else 1)'; then
        password=$(cat "$DATA/first-password")
    else
        rm -f "$DATA/first-password"
    fi
fi

{
    echo "Cairn backup appliance on $(hostname)"
    echo "Web UI: ${urls:-no address yet (no network?)}" | sed '2,$s/^/        /'
    echo "Its certificate's SHA-256 fingerprint: $fingerprint"
    [ -n "$password" ] && echo "Sign in as admin with the one-time password: $password"
    echo
} >/run/cairn-issue.new
chmod 0600 /run/cairn-issue.new  # the password: root (the getty) alone reads it
mv /run/cairn-issue.new /run/cairn-issue
mkdir -p /etc/issue.d
ln -sf /run/cairn-issue /etc/issue.d/cairn.issue
cat /run/cairn-issue
line="cairn ready: $(echo $urls | tr '\n' ' ')fingerprint $fingerprint${password:+ admin one-time password $password}"
echo "$line" >/dev/console 2>/dev/null || true
echo "$line"
