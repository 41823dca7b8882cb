#!/bin/bash
# Before cairn.service, at every boot; the first boot of a machine does the work:
#  - the data disk: a second disk labelled cairn-data is mounted at /var/lib/cairn; a blank one is
#    formatted first when the kernel command line says cairn.format_data=yes, the NoCloud seed says
#    `format_data: yes`, or someone at the console answers yes (else the data stays on the root disk);
#  - NoCloud (a disk labelled CIDATA, as cloud-init reads it): `local-hostname` of meta-data, and
#    `hostname`, `admin_password` and `format_data` of user-data;
#  - the first administrator, `admin`: the seed's password, or a one-time one that the console shows
#    until it is changed (cairn-ready). The TLS certificate and the doors' SSH host keys are made by
#    `cairn serve` on its first start, for this machine alone.
set -euo pipefail
DATA=/var/lib/cairn
CAIRN=/opt/cairn/bin/cairn
SEED=/run/cairn/seed
say() { echo "cairn-firstboot: $*"; }

seed_value() {  # KEY: its value in the seed's meta-data or user-data (`KEY: value` lines), else nothing
    local file
    for file in "$SEED/meta-data" "$SEED/user-data"; do
        [ -f "$file" ] || continue
        sed -n "s/^[[:space:]]*$1:[[:space:]]*//p" "$file" | head -n1 | sed "s/^[\"']//; s/[\"'][[:space:]]*\$//"
    done | head -n1
}

read_seed() {
    local dev
    dev=$(blkid -t LABEL=CIDATA -o device 2>/dev/null | head -n1 || true)
    [ -z "$dev" ] && dev=$(blkid -t LABEL=cidata -o device 2>/dev/null | head -n1 || true)
    [ -n "$dev" ] || return 0
    mkdir -p "$SEED"
    mountpoint -q "$SEED" || mount -o ro "$dev" "$SEED" || { say "cannot read the NoCloud seed on $dev"; return 0; }
    say "NoCloud seed on $dev"
}

set_hostname() {
    local name
    name=$(seed_value hostname)
    [ -n "$name" ] || name=$(seed_value local-hostname)
    [ -n "$name" ] || return 0
    if ! [[ $name =~ ^[A-Za-z0-9]([A-Za-z0-9-]{0,61}[A-Za-z0-9])?$ ]]; then
        say "the seed's hostname '$name' is no host name: kept $(hostname)"
        return 0
    fi
    [ "$(cat /etc/hostname)" = "$name" ] && return 0
    echo "$name" >/etc/hostname
    sed -i "s/^127\.0\.1\.1\s.*/127.0.1.1\t$name/" /etc/hosts
    hostname "$name"
    say "host name $name"
}

root_disk() { lsblk -no PKNAME "$(findmnt -no SOURCE /)"; }

data_disk() {
    if blkid -t LABEL=cairn-data -o device >/dev/null 2>&1; then
        return 0  # formatted before: fstab mounts it
    fi
    local root disk size answer
    root=$(root_disk)
    # Disks of 1 GiB and more that may be written (not a floppy, a CD or the NoCloud seed).
    for disk in $(lsblk -dnpbo NAME,TYPE,SIZE,RO | awk '$2 == "disk" && $3 >= 1073741824 && $4 == 0 {print $1}'); do
        [ "$(basename "$disk")" = "$root" ] && continue
        [ -n "$(blkid -p -o value -s TYPE "$disk" 2>/dev/null || true)" ] && continue  # holds something
        [ -n "$(lsblk -no NAME "$disk" | tail -n +2)" ] && continue  # partitioned
        size=$(lsblk -dno SIZE "$disk" | tr -d ' ')
        if grep -qw 'cairn.format_data=yes' /proc/cmdline || [ "$(seed_value format_data)" = yes ]; then
            answer=yes
        else
            answer=no
            printf '\nCairn: format the blank disk %s (%s) for the backups (ext4)? [y/N] ' "$disk" "$size"
            read -r -t 60 answer </dev/console || answer=no
            [[ $answer =~ ^[Yy] ]] && answer=yes
        fi
        if [ "$answer" != yes ]; then
            say "$disk ($size) left blank: the backups stay on the root disk"
            return 0
        fi
        say "formatting $disk ($size) for the backups"
        mkfs.ext4 -q -L cairn-data "$disk"
        break
    done
    blkid -t LABEL=cairn-data -o device >/dev/null 2>&1 || return 0
    if [ -n "$(ls -A "$DATA" 2>/dev/null)" ]; then
        say "the data disk hides what is in $DATA on the root disk: it stays there, unused"
    fi
    grep -q 'LABEL=cairn-data' /etc/fstab \
        || printf 'LABEL=cairn-data\t%s\text4\tdefaults,nofail\t0\t2\n' "$DATA" >>/etc/fstab
    systemctl daemon-reload
    mount "$DATA"
}

first_admin() {
    [ -f "$DATA/catalog.db" ] && return 0  # not the first start
    chmod 0700 "$DATA"
    local password one_time file
    password=$(seed_value admin_password)
    one_time=
    if [ -z "$password" ]; then
        password=$(head -c 12 /dev/urandom | base64 | tr -d '/+=')
        one_time=--one-time
    fi
    file=$(mktemp)
    printf '%s\n' "$password" >"$file"
    say "making the catalog and the first administrator"
    "$CAIRN" --data "$DATA" user add admin --admin --password-file "$file" $one_time >/dev/null
    if [ -n "$one_time" ]; then
        install -m 0600 "$file" "$DATA/first-password"  # shown on the console until it is changed
    fi
    rm -f "$file"
    say "the first administrator is admin${one_time:+ (one-time password on the console)}"
}

read_seed
set_hostname
data_disk
mountpoint -q "$DATA" && say "the backups are on $(findmnt -no SOURCE "$DATA")" || say "the backups are on the root disk"
first_admin
