#!/usr/bin/env bash
# Checks a project generated from the template (cargo generate, or
# template/make-yours.sh by hand): its identity is its own name everywhere,
# and "seamless" is left only where it names the plumbing library.
#
# Usage: template/check-generated.sh PROJECT-DIR
#
# Allowed: crates/seamless-core/ (untouched), the names seamless-core and
# seamless_core (dependency line, use paths), and one line of credit in the
# README. Everything else naming seamless is reported, and the script exits 1.
set -euo pipefail

project=${1:?usage: template/check-generated.sh PROJECT-DIR}
cd "$project"
name=$(sed -n '/^\[package\]/,/^\[/s/^name = "\(.*\)"/\1/p' Cargo.toml)
failures=0
fail() {
	printf 'FAIL  %s\n' "$*"
	failures=$((failures + 1))
}
ok() { printf 'ok    %s\n' "$*"; }
# expect DESCRIPTION COMMAND...: ok when COMMAND succeeds.
expect() {
	local what=$1
	shift
	if "$@"; then ok "$what"; else fail "$what"; fi
}
fresh_changelog() {
	grep -q '^## \[Unreleased\]' CHANGELOG.md && ! grep -q '^- Socket activation: sockets' CHANGELOG.md
}

expect "Cargo.toml names the package '$name'" test -n "$name" -a "$name" != seamless

# Lines naming seamless other than as seamless-core / seamless_core.
stray=$(grep -rnIi seamless . --exclude-dir=.git --exclude-dir=target --exclude-dir=e2e-logs |
	grep -v '^\./crates/seamless-core/' |
	perl -ne '($t = $_) =~ s/^[^:]*:\d+://; $t =~ s/seamless[-_]core//gi; print if $t =~ /seamless/i' |
	grep -vE '^\./README\.md:[0-9]+:Built from the \[seamless\]' || true)
if [[ -z $stray ]]; then ok "no stray 'seamless' in file contents"; else
	fail "stray 'seamless' in file contents:"
	printf '        %s\n' "$stray"
fi
credits=$(grep -c 'Built from the \[seamless\]' README.md || true)
expect "README credits the template once ($credits)" test "$credits" = 1

names=$(find . \( -path ./crates/seamless-core -o -name target -o -name .git \) -prune -o -iname '*seamless*' -print |
	grep -v '^\./crates/seamless-core$' || true)
if [[ -z $names ]]; then ok "no file named after seamless"; else fail "files named after seamless: $names"; fi

for f in "units/$name.socket" "units/$name.service" "packaging/$name.toml" "packaging/$name.1" \
	"packaging/$name.lintian-overrides" crates/seamless-core/Cargo.toml; do
	expect "$f exists" test -f "$f"
done
for f in bench BENCHMARKS.md cargo-generate.toml template; do
	expect "$f is not part of the project" test ! -e "$f"
done
if grep -q 'template-only' -r . --exclude-dir=target --exclude-dir=.git; then
	fail "template-only markers left: $(grep -rl 'template-only' . --exclude-dir=target --exclude-dir=.git | paste -sd' ')"
else
	ok "no template-only block left"
fi
shouty=${name//-/_}
shouty=${shouty^^}
expect "README documents ${shouty}_* variables" grep -q "${shouty}_HTTP__MAX_CONNECTIONS" README.md
expect "CHANGELOG.md is a fresh one" fresh_changelog

((failures == 0)) || { printf '%d check(s) failed\n' "$failures"; exit 1; }
printf 'generated project %s: all checks passed\n' "$name"
