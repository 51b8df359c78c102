#!/usr/bin/env bash
# Writes a man page for bnfold to standard output, made from the binary's own
# --help texts (the overview, then each subcommand's help), so that the page
# can never disagree with the binary it is installed beside.
#
# Usage: scripts/make-manpage.sh path/to/bnfold > bnfold.1
set -euo pipefail
bin=$1
version=$("$bin" --version)

# roff: a backslash is written \e, and a line starting with . or ' is
# protected by a leading \&.
roff() { sed -e 's/\\/\\e/g' -e "s/^\([.']\)/\\\\\&\1/"; }

# The subcommands as the top-level help lists them ("  name ...", after
# "SUBCOMMANDS:"), or the known four if that section's layout changes.
subcommands=$("$bin" --help | awk '/^SUBCOMMANDS:/ {s=1; next} s && /^  [a-z]/ {print $1} s && /^[A-Z]/ {s=0}')
[ -n "$subcommands" ] || subcommands="fold check inspect passes"

cat <<ROFF
.TH BNFOLD 1 "" "bnfold $version" "User Commands"
.SH NAME
bnfold \- fold BatchNormalization into neighbouring weights of ONNX models
.SH DESCRIPTION
.nf
$("$bin" --help | roff)
.fi
ROFF
for c in $subcommands; do
    printf '.SH "BNFOLD %s"\n.nf\n' "$(echo "$c" | tr a-z A-Z)"
    "$bin" "$c" --help | roff
    printf '.fi\n'
done
cat <<ROFF
.SH EXIT STATUS
0 on success; 1 when verification of a fold failed (nothing is written) or
\fBbnfold check\fR found the models not equivalent; 2 on any error.
.SH SEE ALSO
The README of the bnfold repository.
ROFF
