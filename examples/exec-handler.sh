#!/bin/sh
# examples/exec-handler.sh: the exec-mode twin of handler.sh, for contrast.
#
#     queue "spool" {
#         command = {"/bin/sh", "/usr/share/doc/warren/examples/exec-handler.sh",
#                    "/var/spool/warren"}
#     }
#
# warrend runs it once per message: the body on stdin, the metadata in
# WARREN_* variables, the exit status the outcome (0 ack, 65 failed for
# good, anything else a failed attempt, retried). It spools the body into
# DIR/NAME.body, NAME the message id when it is a plain file name, else
# "PID". An empty body is bad input: exit 65.

dir=${1:?usage: exec-handler.sh DIR}
id=${WARREN_MESSAGE_ID:-}
case $id in
'' | .* | *[!A-Za-z0-9._-]*) name=$$ ;;
*) name=$id ;;
esac
tmp=$dir/.$$.body
cat >"$tmp" || exit 75
if [ ! -s "$tmp" ]; then
	rm -f "$tmp"
	echo "exec-handler.sh: $name: empty body" >&2
	exit 65
fi
mv -f "$tmp" "$dir/$name.body" || exit 75
echo "exec-handler.sh: $name: attempt $WARREN_ATTEMPT, spooled" >&2
exit 0
