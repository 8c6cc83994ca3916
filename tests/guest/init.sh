#!/bin/sh
# shellcheck shell=bash
# (busybox ash: checked as bash, since shellcheck 0.9 has no busybox dialect;
# only features both shells share are used: local, ${v//p/r}, $'..')
# Copyright (c) 2026, Infinivirt developers
# GNU General Public License v3.0+ (see LICENSES/GPL-3.0-or-later.txt or https://www.gnu.org/licenses/gpl-3.0.txt)
# SPDX-License-Identifier: GPL-3.0-or-later
# /init of the infinivirt test guest (busybox ash, runs as PID 1).
#
# Reports what the guest sees on the serial console, one line per fact, each
# line starting with "INFINIVIRT " followed by key=value pairs (see README.md).
# Values never contain whitespace: whitespace inside a value is replaced by "_".
#
# Under TCG every fork+exec costs milliseconds, so everything below uses shell
# built-ins (read, echo, case, cd -P, arithmetic) and forks only where there
# is no way around it (mount, modprobe, stty, dd).

export PATH=/bin:/sbin:/usr/bin:/usr/sbin
umask 022

say() { echo "INFINIVIRT $*"; }

# --- helpers (set a global variable instead of printing: $(...) would fork) --

# _v <- first line of file $1 ('' if unreadable); leading/trailing blanks are
# stripped by read, inner whitespace becomes '_'.
getv() {
    _v=
    [ -r "$1" ] || return 1
    IFS= read -r _v <"$1"
    _v=${_v#"${_v%%[![:space:]]*}"}
    _v=${_v%"${_v##*[![:space:]]}"}
    _v=${_v//[[:space:]]/_}
    return 0
}

# _n <- number of CPUs in a list like "0-3,5,7-8".
count_list() {
    local IFS=, r a b
    _n=0
    for r in $1; do
        case $r in
            *-*) a=${r%-*}; b=${r#*-}; _n=$((_n + b - a + 1)) ;;
            ?*) _n=$((_n + 1)) ;;
        esac
    done
}

# _d <- basename of the directory symlink $1 points to ('' if none).
link_base() {
    _d=
    if cd -P "$1" 2>/dev/null; then _d=${PWD##*/}; fi
    cd /
}

# --- report sections ---------------------------------------------------------

report_cpus() {
    local d=/sys/devices/system/cpu on pr po
    getv $d/online; on=$_v
    getv $d/present; pr=$_v
    getv $d/possible; po=$_v
    count_list "$on"
    say "cpus online=$on present=$pr possible=$po count=$_n"
}

report_memory() {
    local line range a b ram=0 k v _u mt=0 mf=0
    # Top-level (unindented) "System RAM" ranges of /proc/iomem.
    while IFS= read -r line; do
        case $line in
            " "*) ;;
            *" : System RAM")
                range=${line%% *}; a=${range%-*}; b=${range#*-}
                ram=$((ram + 0x$b - 0x$a + 1)) ;;
        esac
    done </proc/iomem
    while read -r k v _u; do
        case $k in
            MemTotal:) mt=$v ;;
            MemFree:) mf=$v; break ;;
        esac
    done </proc/meminfo
    say "memory system_ram_kib=$((ram / 1024)) memtotal_kib=$mt memfree_kib=$mf"
}

report_firmware() {
    if [ -d /sys/firmware/efi ]; then say "firmware type=uefi"; else say "firmware type=bios"; fi
}

report_disks() {
    local d name sectors ro serial
    for d in /sys/block/*; do
        [ -e "$d" ] || continue
        name=${d##*/}
        case $name in ram*|loop*) continue ;; esac
        getv "$d/size"; sectors=${_v:-0}
        getv "$d/ro"; ro=${_v:-0}
        serial=
        if getv "$d/serial"; then
            serial=$_v                                  # virtio-blk
        elif getv "$d/device/serial"; then
            serial=$_v                                  # nvme
        elif [ -r "$d/device/vpd_pg80" ]; then           # scsi / libata
            serial=$(dd if="$d/device/vpd_pg80" bs=1 skip=4 2>/dev/null)
            serial=${serial#"${serial%%[![:space:]]*}"}
            serial=${serial%"${serial##*[![:space:]]}"}
            serial=${serial//[[:space:]]/_}
        fi
        say "disk name=$name size_bytes=$((sectors * 512)) serial=$serial ro=$ro"
    done
}

report_nics() {
    local n name mac mtu rx tx
    for n in /sys/class/net/*; do
        [ -e "$n" ] || continue
        name=${n##*/}
        [ "$name" = lo ] && continue
        getv "$n/address"; mac=$_v
        getv "$n/mtu"; mtu=$_v
        link_base "$n/device/driver"
        set -- "$n"/queues/rx-*; [ -e "$1" ] && rx=$# || rx=0
        set -- "$n"/queues/tx-*; [ -e "$1" ] && tx=$# || tx=0
        say "nic name=$name mac=$mac driver=${_d:-none} queues_rx=$rx queues_tx=$tx mtu=$mtu"
    done
}

# Network cards on the PCI bus, with or without a driver (the cloud kernel has
# none for e1000 or rtl8139, but the card is still there to be seen).
report_pcinics() {
    local d vendor device class
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        getv "$d/class"; class=$_v
        case $class in 0x0200*) ;; *) continue ;; esac
        getv "$d/vendor"; vendor=$_v
        getv "$d/device"; device=$_v
        link_base "$d/driver"
        say "pcinic slot=${d##*/} vendor=$vendor device=$device driver=${_d:-none}"
    done
}

# Platform devices (not part of "all"): the TPM, the RNG in use, an i6300esb
# watchdog on the PCI bus (the cloud kernel has no driver for it), SMBIOS fields.
report_devices() {
    local d tpm=none major='' rng='' wdt=none serial='' vendor='' asset=''
    for d in /sys/class/tpm/tpm*; do
        [ -e "$d" ] || continue
        tpm=${d##*/}; getv "$d/tpm_version_major"; major=$_v; break
    done
    getv /sys/class/misc/hw_random/rng_current; rng=$_v
    for d in /sys/bus/pci/devices/*; do
        getv "$d/vendor"; [ "$_v" = 0x8086 ] || continue
        getv "$d/device"; [ "$_v" = 0x25ab ] && wdt=${d##*/}
    done
    getv /sys/class/dmi/id/product_serial; serial=$_v
    getv /sys/class/dmi/id/sys_vendor; vendor=$_v
    getv /sys/class/dmi/id/chassis_asset_tag; asset=$_v
    say "devices tpm=$tpm tpm_major=$major rng=$rng watchdog_pci=$wdt product_serial=$serial sys_vendor=$vendor chassis_asset=$asset"
}

# TPM2_ReadClock through /dev/tpm0 (one write, one read): the response in hex.
# Its resetCount grows with each boot on the same TPM state.
tpm_clock() {
    printf '\200\001\000\000\000\012\000\000\001\201' >/tmp/readclock
    exec 3<>/dev/tpm0 || return 1
    dd bs=10 count=1 </tmp/readclock >&3 2>/dev/null
    _v=$(dd bs=64 count=1 <&3 2>/dev/null | od -An -v -tx1)
    exec 3>&-
    say "tpm_clock hex=${_v//[[:space:]]/}"
}

# Every PCI device (video cards, USB controllers, virtio-fs, ...); not part of "all".
report_pci() {
    local d vendor device class
    for d in /sys/bus/pci/devices/*; do
        [ -e "$d" ] || continue
        getv "$d/class"; class=$_v
        getv "$d/vendor"; vendor=$_v
        getv "$d/device"; device=$_v
        link_base "$d/driver"
        say "pci slot=${d##*/} vendor=$vendor device=$device class=$class driver=${_d:-none}"
    done
}

# report [all|cpus|memory|firmware|disks|nics|pcinics|devices|pci]...  (default: all)
report() {
    [ $# -gt 0 ] || set -- all
    local s
    for s in "$@"; do
        case $s in
            all) report_cpus; report_memory; report_firmware; report_disks; report_nics; report_pcinics ;;
            cpus|cpu) report_cpus ;;
            memory|mem) report_memory ;;
            firmware) report_firmware ;;
            disks|disk) report_disks ;;
            nics|nic) report_nics ;;
            pcinics) report_pcinics ;;
            devices) report_devices ;;
            pci) report_pci ;;
            *) echo "report: unknown section '$s'" >&2; return 2 ;;
        esac
    done
}

# Bring hot-plugged vCPUs (and any offline memory blocks) online.
online_all() {
    local f s
    for f in /sys/devices/system/cpu/cpu[0-9]*/online /sys/devices/system/memory/memory[0-9]*/online; do
        [ -e "$f" ] || continue
        read -r s <"$f"
        [ "$s" = 1 ] || echo 1 >"$f"
    done
}

# --- command channel on the second serial port --------------------------------
# One command per line; blank lines are ignored.  Each command runs in a
# subshell (stdin /dev/null, stdout+stderr to the port), then the line
# "INFINIVIRT-END rc=<exit code>" follows.
channel_loop() {
    local cmd
    while :; do
        if IFS= read -r cmd <&4; then
            cmd=${cmd%"$CR"}
            case $cmd in *[![:space:]]*) ;; *) continue ;; esac
            ( eval "$cmd" ) </dev/null >&4 2>&1
            echo "INFINIVIRT-END rc=$?" >&4
        else
            sleep 1
        fi
    done
}

start_channel() {
    [ -c /dev/ttyS1 ] || return 1
    getv /sys/class/tty/ttyS1/type || return 1
    [ "${_v:-0}" != 0 ] || return 1       # 0 = no UART at that address
    # "command exec": a failed redirection must not kill PID 1 (plain exec would).
    command exec 4<>/dev/ttyS1 || return 1
    stty raw -echo <&4 2>/dev/null
    channel_loop </dev/null >/dev/null 2>&1 &
    return 0
}

# --- boot ----------------------------------------------------------------------

CR=$'\r'
mount -a 2>/dev/null || {
    mount -t proc proc /proc
    mount -t sysfs sysfs /sys
    mount -t devtmpfs devtmpfs /dev
}

getv /proc/sys/kernel/osrelease; KVER=$_v
say "boot kernel=$KVER"

# Modules: the list is generated at build time (build_guest.py); options such
# as scsi_mod scan=sync come from /etc/modprobe.d/.
MODULES=
[ -r /etc/infinivirt/modules ] && read -r MODULES </etc/infinivirt/modules
# shellcheck disable=SC2086  # word splitting intended
modprobe -a $MODULES 2>/tmp/modprobe.log
loaded=''
failed=''
for m in $MODULES; do
    m=${m//-/_}
    if [ -d "/sys/module/$m" ]; then loaded=$loaded${loaded:+,}$m; else failed=$failed${failed:+,}$m; fi
done
say "modules loaded=$loaded failed=$failed"

report all

if start_channel; then say "channel tty=ttyS1"; fi

# Power button: open its event device *before* reporting ready, since evdev
# drops events nobody has open.
pb=
tries=0
while :; do
    for ev in /sys/class/input/event*; do
        getv "$ev/device/name" || continue
        if [ "$_v" = Power_Button ] && [ -c "/dev/input/${ev##*/}" ]; then
            pb=/dev/input/${ev##*/}
            break 2
        fi
    done
    tries=$((tries + 1))
    [ $tries -ge 20 ] && break
    sleep 0.1
done

if [ -z "$pb" ] || ! command exec 3<"$pb"; then
    say "error no_power_button"
    while :; do sleep 3600; done
fi

say "power_button dev=${pb##*/}"
read -r up _ </proc/uptime
say "timing uptime_s=$up"
say "ready"

# Block until the power button produces an event (any event on this device
# is KEY_POWER), then power off: QEMU exits with a guest-initiated SHUTDOWN.
until dd bs=24 count=1 <&3 >/dev/null 2>&1; do sleep 1; done
say "poweroff reason=acpi"
poweroff -f
while :; do sleep 3600; done
