#!/bin/bash
# After `cairn serve` starts, and again when the first administrator's one-time password is changed
# (cairn-ready.path): wait until the web UI answers, then say where to sign in on the console (the
# getty's issue text, and a line when that text changed) and in the journal. The one-time password is
# shown while its file, DATA/first-password, is there: `cairn serve` removes it once it is changed.
set -euo pipefail
umask 077  # the issue text may hold the password
DATA=/var/lib/cairn
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
exec 9>/run/cairn-ready.lock
flock 9  # one writer at a time: the service's start and the path unit may ask at once
password=$(cat "$DATA/first-password" 2>/dev/null) || true  # gone the moment it is changed
{
    echo "Cairn backup appliance on $(hostname)"
    echo "Web UI: ${urls:-no address yet (no network?)}" | sed '2,$s/^/        /'
    echo "Its certificate's SHA-256 fingerprint: $fingerprint"
    [ -n "$password" ] && echo "Sign in as admin with the one-time password: $password"
    echo
} >/run/cairn-issue.new  # 0600 (umask): the password is for root, the getty, alone
if cmp -s /run/cairn-issue.new /run/cairn-issue; then
    rm /run/cairn-issue.new
    exit 0  # nothing new to say
fi
mv /run/cairn-issue.new /run/cairn-issue
mkdir -p /etc/issue.d
ln -sf /run/cairn-issue /etc/issue.d/cairn.issue
agetty --reload 2>/dev/null || true  # the login prompts show the new text
cat /run/cairn-issue
line="cairn ready: $(echo $urls | tr '\n' ' ')fingerprint $fingerprint${password:+ admin one-time password $password}"
echo "$line" >/dev/console 2>/dev/null || true
echo "$line"
