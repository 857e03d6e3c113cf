# Stand-in for OpenWrt's /lib/functions.sh in xapsd's tests: the calls
# xapsd's init script and maintainer scripts make, written for the tests.
# shellcheck shell=sh disable=SC1090,SC2013,SC2034,SC3043

CONFIG_SECTION=""

# What `uci export` prints is sourced with these defined, as uci_load does.
package() { :; }
config() {
	CONFIG_SECTION="$2"
	eval "CONFIG_${CONFIG_SECTION}_TYPE=\$1"
}
option() {
	eval "CONFIG_${CONFIG_SECTION}_$1=\$2"
}
list() {
	local len
	eval "len=\${CONFIG_${CONFIG_SECTION}_$1_LENGTH:-0}"
	len=$((len + 1))
	eval "CONFIG_${CONFIG_SECTION}_$1_ITEM$len=\$2"
	eval "CONFIG_${CONFIG_SECTION}_$1_LENGTH=$len"
	eval "CONFIG_${CONFIG_SECTION}_$1=\"\${CONFIG_${CONFIG_SECTION}_$1:+\$CONFIG_${CONFIG_SECTION}_$1 }\$2\""
}

config_load() {
	. "${UCI_CONFIG_DIR:-/etc/config}/$1"
}

config_get() {
	eval "$1=\${CONFIG_$2_$3:-\$4}"
}

config_get_bool() {
	local _tmp
	config_get _tmp "$2" "$3" "$4"
	case "$_tmp" in
	1 | on | true | yes | enabled) _tmp=1 ;;
	0 | off | false | no | disabled) _tmp=0 ;;
	*) _tmp="$4" ;;
	esac
	eval "$1=\$_tmp"
}

config_list_foreach() {
	local section="$1" option="$2" function="$3" len val c=1
	shift 3
	eval "len=\${CONFIG_${section}_${option}_LENGTH:-}"
	[ -n "$len" ] || return 0
	while [ "$c" -le "$len" ]; do
		eval "val=\${CONFIG_${section}_${option}_ITEM$c}"
		"$function" "$val" "$@"
		c=$((c + 1))
	done
}

group_exists() { grep -qs "^$1:" "$root/etc/group"; }
user_exists() { grep -qs "^$1:" "$root/etc/passwd"; }

next_id() {
	awk -F: 'BEGIN { m = 99 } $3 > m && $3 < 65534 { m = $3 } END { print m + 1 }' "$1"
}

group_add() {
	echo "$1:x:$2:" >> "$root/etc/group"
}

group_add_next() {
	local gid
	gid="$(next_id "$root/etc/group")"
	group_add "$1" "$gid"
	echo "$gid"
}

user_add() {
	local uid="$2" gid="$3"
	[ -n "$uid" ] || uid="$(next_id "$root/etc/passwd")"
	[ -n "$gid" ] || gid="$uid"
	echo "$1:*:$uid:$gid:$1:/var/run/$1:/bin/false" >> "$root/etc/passwd"
}

group_add_user() {
	grep -qs "^$1:.*[:,]$2\(,\|$\)" "$root/etc/group" && return 0
	sed -i "s/^\($1:[^:]*:[^:]*:\)\(.\+\)$/\1\2,$2/; s/^\($1:[^:]*:[^:]*:\)$/\1$2/" "$root/etc/group"
}

# Require-User tuples "user[=uid]:group[=gid]", from the opkg control file
# or from OpenWrt 25's /lib/apk/packages/<pkg>.rusers.
add_group_and_user() {
	local rusers tuple uname gname uid gid
	if [ -n "${1:-}" ]; then
		rusers="$(sed -ne 's/^Require-User: *//p' "$root/usr/lib/opkg/info/$1.control" 2>/dev/null)"
	else
		rusers="$(cat "$root/lib/apk/packages/$pkgname.rusers" 2>/dev/null)"
	fi
	for tuple in $rusers; do
		uname="${tuple%%:*}"
		gname="${tuple#*:}"
		[ "$gname" != "$tuple" ] || gname=""
		uid="${uname#*=}"; [ "$uid" != "$uname" ] || uid=""; uname="${uname%%=*}"
		gid="${gname#*=}"; [ "$gid" != "$gname" ] || gid=""; gname="${gname%%=*}"
		if [ -n "$gname" ]; then
			if [ -n "$gid" ]; then
				group_exists "$gname" || group_add "$gname" "$gid"
			elif group_exists "$gname"; then
				gid="$(sed -ne "s/^$gname:[^:]*:\([0-9]*\):.*/\1/p" "$root/etc/group")"
			else
				gid="$(group_add_next "$gname")"
			fi
		fi
		[ -z "$uname" ] || user_exists "$uname" || user_add "$uname" "$uid" "$gid"
		[ -z "$uname" ] || [ -z "$gname" ] || group_add_user "$gname" "$uname"
	done
}

# opkg calls "<info>/<pkg>.postinst", apk (OpenWrt 25) exports pkgname.
default_postinst() {
	local root="${IPKG_INSTROOT}" filelist i
	if [ -n "${1:-}" ]; then
		pkgname="$(basename "${1%.*}")"
		filelist="$root/usr/lib/opkg/info/$pkgname.list"
		add_group_and_user "$pkgname"
	else
		filelist="$root/lib/apk/packages/$pkgname.list"
	fi
	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			/bin/sh "$root/etc/rc.common" "$root$i" enable
		else
			[ "${PKG_UPGRADE:-}" = 1 ] || "$i" enable
			"$i" enabled && "$i" start
		fi
	done
	return 0
}

default_prerm() {
	local root="${IPKG_INSTROOT}" filelist i
	if [ -n "${1:-}" ]; then
		pkgname="$(basename "${1%.*}")"
		filelist="$root/usr/lib/opkg/info/$pkgname.list"
	else
		filelist="$root/lib/apk/packages/$pkgname.list"
	fi
	for i in $(grep -s "^/etc/init.d/" "$filelist"); do
		if [ -n "$root" ]; then
			/bin/sh "$root/etc/rc.common" "$root$i" disable
		else
			[ "${PKG_UPGRADE:-}" = 1 ] || "$i" disable
			"$i" stop
		fi
	done
	return 0
}
