#!/bin/bash
# At every boot; the first boot of a machine does the work. Two steps, each its own unit:
#
#   cairn-firstboot seed   (cairn-seed.service, before the network starts)
#     the NoCloud seed (a disk labelled CIDATA, as cloud-init reads it): `local-hostname` of meta-data,
#     `hostname` of user-data, and network-config (cairn-seed-network writes /etc/network/interfaces);
#   cairn-firstboot        (cairn-firstboot.service, before cairn.service)
#     the data disk: a second disk labelled cairn-data is mounted at /var/lib/cairn; a blank one is
#     formatted first when the kernel command line says cairn.format_data=yes, the seed's user-data says
#     `format_data: yes`, or someone at the console answers yes (else the data stays on the root disk).
#     A data disk made by an earlier image is found by its label: the new one takes it up as it is.
#     The first administrator, `admin`, gets the seed's `admin_password`; without one, `cairn serve`
#     makes `admin` with a one-time password that the console shows until it is changed (cairn-ready).
#
# The TLS certificate and the doors' SSH host keys are made by `cairn serve` on its first start, in the
# data directory: made for this machine alone, and kept across an upgrade of the image.
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

read_seed() {  # mounts the seed once: the seed step's mount serves the later step
    local dev
    mountpoint -q "$SEED" && return 0
    dev=$(blkid -t LABEL=CIDATA -o device 2>/dev/null | head -n1 || true)
    [ -z "$dev" ] && dev=$(blkid -t LABEL=cidata -o device 2>/dev/null | head -n1 || true)
    [ -n "$dev" ] || return 0
    mkdir -p "$SEED"
    mount -o ro "$dev" "$SEED" || { say "cannot read the NoCloud seed on $dev"; return 0; }
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
    if ! blkid -t LABEL=cairn-data -o device >/dev/null 2>&1; then
        format_blank_disk || return 0
    fi
    if [ -n "$(ls -A "$DATA" 2>/dev/null)" ] && ! mountpoint -q "$DATA"; then
        say "the data disk hides what is in $DATA on the root disk: it stays there, unused"
    fi
    if ! grep -q 'LABEL=cairn-data' /etc/fstab; then  # a new disk, or a new image on the disk of an older one
        printf 'LABEL=cairn-data\t%s\text4\tdefaults,nofail\t0\t2\n' "$DATA" >>/etc/fstab
        systemctl daemon-reload
    fi
    # Through systemd, which may be mounting it already (fstab's nofail does not order it before us).
    mountpoint -q "$DATA" || systemctl start "$(systemd-escape -p --suffix=mount "$DATA")"
}

format_blank_disk() {  # returns 1 when no disk was formatted
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
            return 1
        fi
        say "formatting $disk ($size) for the backups"
        mkfs.ext4 -q -L cairn-data "$disk"
        return 0
    done
    return 1
}

first_admin() {
    [ -f "$DATA/catalog.db" ] && return 0  # not the first start
    chmod 0700 "$DATA"
    local password file
    password=$(seed_value admin_password)
    [ -n "$password" ] || return 0  # cairn serve makes admin with a one-time password
    file=$(mktemp)
    printf '%s\n' "$password" >"$file"
    say "making the catalog and the first administrator, admin, with the seed's password"
    if ! "$CAIRN" --data "$DATA" user add admin --admin --password-file "$file" >/dev/null; then
        say "the seed's admin_password is refused (above): admin gets a one-time password instead"
    fi
    rm -f "$file"
}

network() {
    [ -f "$SEED/network-config" ] || return 0
    local said
    if said=$(/usr/local/sbin/cairn-seed-network "$SEED/network-config" 2>&1); then
        [ -z "$said" ] || echo "$said" | while read -r line; do say "network: $line"; done
    else
        say "$said; the network stays as it was"
    fi
}

case "${1:-}" in
seed)
    read_seed
    set_hostname
    network
    ;;
"")
    read_seed
    data_disk
    mountpoint -q "$DATA" && say "the backups are on $(findmnt -no SOURCE "$DATA")" || say "the backups are on the root disk"
    first_admin
    ;;
*)
    echo "usage: cairn-firstboot [seed]" >&2
    exit 2
    ;;
esac
