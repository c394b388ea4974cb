#!/bin/sh
# examples/handler.sh: a persistent warren handler in POSIX sh.
#
#     queue "spool" {
#         mode = "persistent"
#         command = {"/bin/sh", "/usr/share/doc/warren/examples/handler.sh",
#                    "/var/spool/warren"}
#     }
#
# It spools each message into the directory DIR (its argument, or
# $SPOOL_DIR, e.g. from queue.environment): the body byte for byte in
# DIR/NAME.body and the metadata lines as they came (still escaped, see
# warren-handler(7)) in DIR/NAME.meta, where NAME is the message id when it
# is a plain file name, else "PID.N". Each appears whole (a rename), the
# .meta first, so a reader that waits for NAME.body sees both.
# An empty body is bad input: answered "fail". A file that cannot be
# written is a failed attempt: answered "retry".
#
# The protocol with `read` and `head -c`: read stops at the newline and
# reads a pipe byte by byte, and GNU head -c never reads past LEN on a
# pipe, so neither consumes a byte of the next frame.

dir=${1:-${SPOOL_DIR:?usage: handler.sh DIR (or SPOOL_DIR=DIR)}}
n=0

# protocol_error TEXT: the input is not the protocol; warrend restarts us
protocol_error() {
	echo "handler.sh: $*" >&2
	exit 1
}

while read -r tag nmeta len; do
	[ "$tag" = warren ] || protocol_error "bad frame header: $tag"
	for v in "$nmeta" "$len"; do
		case $v in
		'' | *[!0-9]*) protocol_error "bad frame header: $nmeta $len" ;;
		esac
	done
	n=$((n + 1))
	id=
	tmp=$dir/.$$.$n
	: >"$tmp.meta" || protocol_error "cannot write $tmp.meta"
	i=0
	while [ "$i" -lt "$nmeta" ]; do
		IFS= read -r line || protocol_error "end of input in the metadata"
		printf '%s\n' "$line" >>"$tmp.meta"
		case $line in
		WARREN_MESSAGE_ID=*) id=${line#WARREN_MESSAGE_ID=} ;;
		esac
		i=$((i + 1))
	done
	head -c "$len" >"$tmp.body"
	got=$(wc -c <"$tmp.body")
	[ "$got" -eq "$len" ] || protocol_error "body: $got of $len bytes"

	# the id names the files only when it needs no escaping at all
	case $id in
	'' | .* | *[!A-Za-z0-9._-]*) name=$$.$n ;;
	*) name=$id ;;
	esac
	if [ "$len" -eq 0 ]; then
		rm -f "$tmp.meta" "$tmp.body"
		echo "handler.sh: $name: empty body" >&2
		echo "fail empty body"
	elif mv -f "$tmp.meta" "$dir/$name.meta" &&
		mv -f "$tmp.body" "$dir/$name.body"; then
		echo "ok spooled $name"
	else
		rm -f "$tmp.meta" "$tmp.body"
		echo "retry cannot spool $name"
	fi
done
# EOF on stdin: warrend stops us (shutdown, reload, max_messages)
exit 0
