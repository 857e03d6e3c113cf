# Stand-in for OpenWrt's /lib/functions/procd.sh in xapsd's tests: every
# call is written to $PROCD_LOG, one line each, arguments in brackets.
# shellcheck shell=sh disable=SC3043

_procd_log() {
	local word
	{
		printf '%s' "$1"
		shift
		for word in "$@"; do
			printf ' [%s]' "$word"
		done
		printf '\n'
	} >> "${PROCD_LOG:-/tmp/procd.log}"
}

procd_open_instance() { _procd_log open_instance "$@"; }
procd_set_param() { _procd_log set_param "$@"; }
procd_append_param() { _procd_log append_param "$@"; }
procd_close_instance() { _procd_log close_instance "$@"; }
procd_add_reload_trigger() { _procd_log add_reload_trigger "$@"; }
procd_open_trigger() { _procd_log open_trigger "$@"; }
procd_close_trigger() { _procd_log close_trigger "$@"; }
