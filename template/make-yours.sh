#!/usr/bin/env bash
# Turns a copy of the seamless template into your own service, NAME, in place.
#
# Usage: template/make-yours.sh NAME        (from anywhere inside the copy)
#
# `cargo generate` runs it for you (see cargo-generate.toml); on a plain clone
# run it by hand. NAME is the Cargo package, the binary, the Debian and RPM
# package, the systemd units (NAME.socket, NAME.service), /etc/NAME/NAME.toml,
# /run/NAME and the man page. An underscore becomes a dash (Debian package
# names cannot contain one): ledger_v2 gives ledger-v2, environment variables
# LEDGER_V2_*, metrics ledger_v2_*.
#
# What it does:
#   - renames files named after seamless (units/, packaging/);
#   - replaces seamless, SEAMLESS and Seamless in every file, except the
#     plumbing library: crates/seamless-core/ is untouched, and the names
#     seamless-core / seamless_core (its dependency line and use paths) stay;
#   - removes what belongs to the template only: the benchmark (bench/,
#     BENCHMARKS.md, the naive anchor in the workspace), the blocks marked
#     "template-only" (the benchmark and generator stages of .ci/run, the
#     template's own README sections), cargo-generate.toml and template/;
#   - starts a fresh CHANGELOG.md and packaging/changelog.Debian.
# It needs bash, perl, find and sed; it builds nothing.
set -euo pipefail

die() {
	printf 'make-yours: %s\n' "$*" >&2
	exit 2
}

[[ $# -eq 1 ]] || die "usage: template/make-yours.sh NAME"
ROOT=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$ROOT"
[[ -f Cargo.toml && -d crates/seamless-core ]] || die "$ROOT is not a copy of the seamless template"

# kebab-case: the package, binary and unit name.
KEBAB=${1,,}
KEBAB=${KEBAB//_/-}
# Cargo, dpkg and rpm all accept this; dpkg wants at least two characters
# and no underscore or upper case.
if ! [[ $KEBAB =~ ^[a-z][a-z0-9]*(-[a-z0-9]+)*$ ]] || ((${#KEBAB} < 2)); then
	die "'$1' cannot be a package name: use letters, digits and dashes, starting with a letter (e.g. orders-api)"
fi
case $KEBAB in
seamless | seamless-* | loadgen) die "'$KEBAB' is taken by the template itself; choose another name" ;;
esac
# snake_case for identifiers (metric names), SHOUTY_SNAKE for the
# environment prefix.
SNAKE=${KEBAB//-/_}
SHOUTY=${SNAKE^^}
# In roff (the man page) a dash in a name is written \-.
ROFF=${KEBAB//-/\\-}
ROFF_UPPER=${ROFF^^}
export KEBAB SNAKE SHOUTY ROFF ROFF_UPPER

# Every file of the copy except the library, build output and VCS data.
files() {
	find . \( -path ./crates/seamless-core -o -path ./target -o -path ./.git \
		-o -path ./e2e-logs -o -path ./template \) -prune -o -type f -print
}

# 1. What does not come along.
rm -rf bench BENCHMARKS.md cargo-generate.toml
perl -0pi -e 's/,\s*"bench\/naive"//; s/(description = "[^"]*HTTP service) template with/$1 with/' Cargo.toml
# Blocks between "template-only:begin" and "template-only:end" lines (any
# comment syntax), markers included.
while IFS= read -r f; do
	perl -ni -e 'if (/template-only:begin/) { $skip = 1; next } if (/template-only:end/) { $skip = 0; next } print unless $skip' "$f"
done < <(files | xargs grep -lI 'template-only:begin' 2>/dev/null || true)

# 2. File names: units/seamless.socket -> units/NAME.socket and so on.
while IFS= read -r f; do
	dir=$(dirname "$f") base=$(basename "$f")
	new=$(perl -pe 's/seamless(?![-_]core)/$ENV{KEBAB}/g' <<<"$base")
	mv "$f" "$dir/$new"
done < <(files | grep -E '/[^/]*seamless[^/]*$' | grep -vE 'seamless[-_]core[^/]*$' || true)

# 3. Contents. Order matters: the specific spellings first.
while IFS= read -r f; do
	case $f in
	*.1)
		# Man pages: roff dashes, and the upper-case title.
		perl -pi -e '
			s/SEAMLESS(?![-_]CORE)/$ENV{ROFF_UPPER}/g;
			s/[Ss]eamless(?![-_]core)/$ENV{ROFF}/g;' "$f"
		;;
	*)
		perl -pi -e '
			s/SEAMLESS(?![-_]CORE)/$ENV{SHOUTY}/g;
			# Debian package file names: NAME_VERSION_ARCH.deb.
			s/seamless_(?=[*\d])/$ENV{KEBAB}_/g;
			# Identifiers such as metric names: seamless_reloads_total.
			s/seamless_(?!core)/$ENV{SNAKE}_/g;
			s/[Ss]eamless(?![-_]core)/$ENV{KEBAB}/g;' "$f"
		;;
	esac
done < <(files | xargs grep -lIi 'seamless' 2>/dev/null || true)

# 4. The README: one line of credit; the benchmark stayed behind.
perl -0pi -e '
	s/\*\* — and a template to copy for your own service\./**./;
	s/\(\[BENCHMARKS\.md\]\(BENCHMARKS\.md\), `bench\/run\.sh`\)/(the template'"'"'s benchmark)/;
	s/^bench\/ .*\n//m;
	s/^cargo-generate\.toml, template\/ .*\n//m;
	s/^(# \Q$ENV{KEBAB}\E\n\n(?:.+\n)+)/$1\nBuilt from the [seamless](https:\/\/example.invalid\/seamless) template; the systemd plumbing is the `seamless-core` library in `crates\/seamless-core\/`.\n/;' README.md

# 5. A history of its own.
today=$(date -u +%Y-%m-%d)
cat >CHANGELOG.md <<CHANGELOG
# Changelog

All notable changes to this project are documented here. The format follows
[Keep a Changelog](https://keepachangelog.com/en/1.1.0/); versions follow
[Semantic Versioning](https://semver.org/).

## [Unreleased]

### Added

- $KEBAB, created $today from the template credited in README.md: socket activation, synchronous reloads,
  zero-drop restarts and binary upgrades, \`.deb\` and \`.rpm\` packages, end-to-end tests on
  real systemd.
CHANGELOG
maintainer=$(sed -n 's/^maintainer = "\(.*\)"$/\1/p' Cargo.toml)
version=$(sed -n '/^\[package\]/,/^\[/s/^version = "\(.*\)"$/\1/p' Cargo.toml)
cat >packaging/changelog.Debian <<CHANGELOG
$KEBAB ($version-1) unstable; urgency=medium

  * Initial release.

 -- $maintainer  $(date -u -R)
CHANGELOG

# 6. Last: the generator itself.
rm -rf template

printf 'make-yours: this is %s now (env %s_*, metrics %s_*)\n' "$KEBAB" "$SHOUTY" "$SNAKE"
