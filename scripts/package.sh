#!/usr/bin/env bash
# Installs Sonde (`make install`) or builds its Debian packages (`make deb`).
#
#   scripts/package.sh install DESTDIR PREFIX   binaries, units, example configs and docs
#   scripts/package.sh deb OUTDIR               sonde-agent_V_ARCH.deb, sonde-collector_V_ARCH.deb,
#                                               sonde-cli_V_ARCH.deb
#
# BUILD_DIR (default .build/release, which `make release` fills with static-stdlib binaries)
# names the binaries to ship; they are stripped on the way in. The version is the VERSION file's.
# DEB_COMPRESSION (default xz) is dpkg-deb's -Z: the tests pass `none` to save time.
# Packages are built with dpkg-deb alone (no debhelper); dependencies come from dpkg-shlibdeps.
set -euo pipefail
cd "$(dirname "$0")/.."
root_dir=$PWD
build_dir=${BUILD_DIR:-.build/release}
version=$(head -n1 VERSION)
arch=$(dpkg --print-architecture)

die() { echo "package: $*" >&2; exit 1; }
for b in sonde-agent sonde-collector sonde; do
  [ -x "$build_dir/$b" ] || die "$build_dir/$b is missing: run \`make release\` first (or set BUILD_DIR)"
done

# bin DEST NAME: a stripped copy of one binary.
bin() { install -D -m 0755 "$build_dir/$2" "$1/$2"; strip --strip-unneeded "$1/$2"; }

# unit PREFIX SRC DEST: the systemd unit with ExecStart pointing at PREFIX/bin.
unit() { install -d "$(dirname "$3")"; sed "s|/usr/bin/|$1/bin/|g" "$2" > "$3"; chmod 0644 "$3"; }

# conf MODE SRC DEST: a config file, never over one that is there (an upgrade keeps the operator's).
conf() { if [ -e "$3" ]; then echo "kept $3"; else install -D -m "$1" "$2" "$3"; fi; }

# docs DIR FILE...: documentation, mode 0644.
docs() { local dir=$1; shift; install -d "$dir"; for f in "$@"; do install -m 0644 "$f" "$dir/"; done; }

# manual DIR NAME: NAME's manual page (section 1, gzipped as Debian wants), made from the program's
# own command definitions by swift-argument-parser's generate-manual, the tool its GenerateManual
# plugin runs: one source for --help and man, never a second text to keep in step. The plugin
# builds every product; asking it for --help builds just the tool, which is then run here.
# GENERATE_MANUAL names a tool already built (the tests: a build from inside `swift test` would
# wait for its lock on .build for good).
# (SwiftPM names a plugin's tool NAME-tool in the debug products.)
manual_tool=${GENERATE_MANUAL:-}
manual() {
  if [ -z "$manual_tool" ]; then
    manual_tool="$(swift build --show-bin-path)/generate-manual-tool"
    [ -x "$manual_tool" ] || swift package generate-manual --help >/dev/null || die "cannot build generate-manual (swift package generate-manual --help)"
  fi
  [ -x "$manual_tool" ] || die "$manual_tool is missing: run \`swift package generate-manual --help\` to build it"
  local pages; pages=$(mktemp -d)
  "$manual_tool" "$build_dir/$2" --date "$(date -u -d "$(git log -1 --format=%cI 2>/dev/null || date -Iseconds)" +%F)" \
    --authors "Sonde developers<sonde@localhost>" -o "$pages" >/dev/null
  install -d "$1/share/man/man1"
  gzip -9n < "$pages/$2.1" > "$1/share/man/man1/$2.1.gz"
  chmod 0644 "$1/share/man/man1/$2.1.gz"
  rm -rf "$pages"
}

# Files of each package, laid out under a root ($1) with a prefix ($2) for programs and docs.
# /etc and /var are never under the prefix (FHS; `make install PREFIX=/usr/local` too).
lay_agent() {
  local r=$1 p=$2
  bin "$r$p/bin" sonde-agent
  manual "$r$p" sonde-agent
  unit "$p" deploy/sonde-agent.service "$r/lib/systemd/system/sonde-agent.service"
  conf 0640 deploy/agent.example.yaml "$r/etc/sonde/agent.yaml"
  conf 0644 deploy/probes/reach.yaml "$r/etc/sonde/probes/reach.yaml"
  conf 0644 deploy/probes/health.yaml "$r/etc/sonde/probes/health.yaml"
  docs "$r$p/share/doc/sonde-agent" README.md docs/agent.md docs/install.md
  install -m 0644 probes/README.md "$r$p/share/doc/sonde-agent/probes.md"
  docs "$r$p/share/doc/sonde-agent/examples" probes/examples/*.yaml deploy/agent.example.yaml
}
lay_collector() {
  local r=$1 p=$2
  bin "$r$p/bin" sonde-collector
  manual "$r$p" sonde-collector
  unit "$p" deploy/sonde-collector.service "$r/lib/systemd/system/sonde-collector.service"
  conf 0640 deploy/collector.example.yaml "$r/etc/sonde/collector.yaml"
  docs "$r$p/share/doc/sonde-collector" README.md docs/collector.md docs/install.md
  docs "$r$p/share/doc/sonde-collector/examples" deploy/collector.example.yaml
  # The Prometheus rules docs/collector.md points at, with their promtool test (SRE review F9).
  docs "$r$p/share/doc/sonde-collector/examples/prometheus" deploy/prometheus/sonde-rules.yml deploy/prometheus/sonde-rules.test.yml
}

# The operator CLI on its own: a workstation that asks a collector needs neither the collector's
# 150 MB nor its service user (SRE review F9).
lay_cli() {
  local r=$1 p=$2
  bin "$r$p/bin" sonde
  manual "$r$p" sonde
  docs "$r$p/share/doc/sonde-cli" README.md
}

# Debian: control file, maintainer scripts, copyright and changelog, then dpkg-deb. USER and
# STATE empty: no service, so no user, state folder or maintainer scripts. RELATIONS: more
# control lines (Recommends, Replaces, …).
build_deb() {
  local name=$1 out=$2 description=$3 user=$4 state=$5 relations=${6:-}
  local stage; stage=$(mktemp -d); trap 'rm -rf "$stage"' RETURN
  chmod 0755 "$stage"
  "lay_${name#sonde-}" "$stage" /usr
  local doc="$stage/usr/share/doc/$name"
  cat > "$doc/copyright" <<COPY
Format: https://www.debian.org/doc/packaging-manuals/copyright-format/1.0/
Upstream-Name: sonde
Files: *
Copyright: the Sonde developers
License: proprietary
 No licence is granted by this package beyond what the Sonde developers grant separately.
COPY
  printf '%s (%s-1) unstable; urgency=medium\n\n  * Release %s (%s).\n\n -- Sonde developers <sonde@localhost>  %s\n' \
    "$name" "$version" "$version" "$("$build_dir/${name/sonde-cli/sonde}" --version)" "$(date -R -d "$(git log -1 --format=%cI 2>/dev/null || date -Iseconds)")" \
    | gzip -9n > "$doc/changelog.Debian.gz"
  chmod 0644 "$doc/copyright" "$doc/changelog.Debian.gz"

  # Shared-library dependencies, as debhelper would compute them. Libraries outside Debian's
  # packages (the Swift runtime of a debug build) are left out: release builds link it statically.
  local shlibs; shlibs=$(mktemp -d)
  mkdir -p "$shlibs/debian"; printf 'Source: sonde\n\nPackage: %s\nArchitecture: any\n' "$name" > "$shlibs/debian/control"
  local bins=("$stage"/usr/bin/*)
  local depends
  depends=$(cd "$shlibs" && dpkg-shlibdeps --ignore-missing-info -O "${bins[@]}" 2>/dev/null | sed -n 's/^shlibs:Depends=//p')
  rm -rf "$shlibs"
  [ -n "$depends" ] || die "dpkg-shlibdeps found no dependencies for $name"

  install -d -m 0755 "$stage/DEBIAN"
  local size; size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
  cat > "$stage/DEBIAN/control" <<CONTROL
Package: $name
Version: $version-1
Architecture: $arch
Maintainer: Sonde developers <sonde@localhost>
Installed-Size: $size
Depends: $depends${user:+, passwd}
Section: net
Priority: optional
Homepage: https://github.com/sonde/sonde
${relations:+$relations
}Description: $description
CONTROL
  if [ -n "$user" ]; then
    (cd "$stage" && find etc -type f | sed 's|^|/|' | sort) > "$stage/DEBIAN/conffiles"
    maintainer_scripts "$name" "$user" "$state" "$stage/DEBIAN"
  fi
  (cd "$stage" && find . -path ./DEBIAN -prune -o -type f -print | sed 's|^\./||' | sort | xargs md5sum) > "$stage/DEBIAN/md5sums"
  install -d "$out"
  dpkg-deb --root-owner-group "-Z${DEB_COMPRESSION:-xz}" --build "$stage" "$out/${name}_${version}-1_${arch}.deb" >/dev/null
  echo "$out/${name}_${version}-1_${arch}.deb"
}

# postinst creates the system user and the state folder (0700), hands it the config's group, and
# (agent) makes the key pair once. Nothing is enabled or started: the config must be edited first.
# DPKG_ROOT is set when dpkg installs into another root without chroot (--force-script-chrootless);
# the scripts then act inside that root only.
maintainer_scripts() {
  local name=$1 user=$2 state=$3 dir=$4 config=/etc/sonde/${1#sonde-}.yaml
  cat > "$dir/postinst" <<POSTINST
#!/bin/sh
set -e
root="\${DPKG_ROOT:-}"
if [ "\$1" = configure ]; then
  if ! grep -q '^$user:' "\$root/etc/passwd" 2>/dev/null; then
    useradd \${root:+--prefix "\$root"} --system --user-group --home-dir $state --no-create-home \\
      --shell /usr/sbin/nologin --comment "Sonde ${name#sonde-}" $user
  fi
  uid=\$(awk -F: '\$1 == "$user" { print \$3 }' "\$root/etc/passwd")
  gid=\$(awk -F: '\$1 == "$user" { print \$3 }' "\$root/etc/group")
  install -d -m 0700 "\$root$state"
  chown "\$uid:\$gid" "\$root$state"
  # The config's group and mode on first install only: an upgrade keeps what the admin set.
  if [ -z "\$2" ] && [ -e "\$root$config" ]; then chgrp "\$gid" "\$root$config" && chmod 0640 "\$root$config"; fi
POSTINST
  if [ "$name" = sonde-agent ]; then
    cat >> "$dir/postinst" <<'POSTINST'
  if [ ! -e "$root/var/lib/sonde/agent.key" ]; then
    "$root/usr/bin/sonde-agent" keygen --out "$root/var/lib/sonde/agent.key" --id "$(hostname)" >/dev/null
    chown "$uid:$gid" "$root/var/lib/sonde/agent.key" "$root/var/lib/sonde/agent.key.pub"
    echo "sonde-agent: made /var/lib/sonde/agent.key; enrol it on the collector (docs/install.md)"
  fi
POSTINST
  fi
  cat >> "$dir/postinst" <<POSTINST
  # Not enabled or started (unlike dh_installsystemd's default): the config names example.com
  # until someone edits it. Say so on first install, where the admin looks.
  if [ -z "\$2" ]; then
    echo "$name: not enabled; edit $config, then: systemctl enable --now $name (docs/install.md)"
  fi
  if [ -z "\$root" ] && [ -d /run/systemd/system ]; then
    systemctl daemon-reload || true
    # An upgrade restarts a running service, so the new binary runs (as dh_installsystemd does).
    if [ -n "\$2" ]; then systemctl try-restart $name.service || true; fi
  fi
fi
exit 0
POSTINST
  cat > "$dir/prerm" <<PRERM
#!/bin/sh
set -e
if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ] && [ "\$1" = remove ]; then
  systemctl stop $name.service || true
fi
exit 0
PRERM
  # The state (keys, spool, database) goes only on purge; the user stays (Debian policy).
  cat > "$dir/postrm" <<POSTRM
#!/bin/sh
set -e
if [ "\$1" = purge ]; then
  rm -rf "\${DPKG_ROOT:-}$state"
  # No enablement left behind (a dangling multi-user.target.wants link, systemd's own state).
  rm -f "\${DPKG_ROOT:-}"/etc/systemd/system/*.wants/$name.service
  if [ -z "\${DPKG_ROOT:-}" ] && command -v deb-systemd-helper >/dev/null; then deb-systemd-helper purge $name.service >/dev/null || true; fi
fi
if [ -z "\${DPKG_ROOT:-}" ] && [ -d /run/systemd/system ]; then systemctl daemon-reload || true; fi
exit 0
POSTRM
  chmod 0755 "$dir/postinst" "$dir/prerm" "$dir/postrm"
}

case "${1:-}" in
  install)
    destdir=${2:-}; prefix=${3:-/usr/local}
    lay_agent "$destdir" "$prefix"
    lay_collector "$destdir" "$prefix"
    lay_cli "$destdir" "$prefix"
    echo "installed into ${destdir:-/} (prefix $prefix); next steps: docs/install.md"
    ;;
  deb)
    out=${2:-$root_dir/.build/deb}
    build_deb sonde-agent "$out" "Sonde synthetic-monitoring agent
 Runs scripted probes (HTTP journeys, TCP, DNS, TLS) against a platform, signs the
 results and pushes them to a Sonde collector." sonde /var/lib/sonde
    build_deb sonde-collector "$out" "Sonde collector
 Receives signed probe results from Sonde agents, decides whether failures are local,
 regional or platform-wide, keeps incidents, serves an API and a status page, and sends
 alerts. The \`sonde\` CLI that queries it is in sonde-cli." sonde-collector /var/lib/sonde-collector \
      "Recommends: sonde-cli"
    # Before 0.6.0 the collector's package held /usr/bin/sonde: an upgrade hands it over.
    build_deb sonde-cli "$out" "Sonde operator CLI
 Asks a Sonde collector what is up (verdicts, results, incidents, agents), re-checks
 result signatures and sends test alerts; for scripts, exit codes follow the worst verdict." "" "" \
      "Replaces: sonde-collector (<< 0.6.0)
Breaks: sonde-collector (<< 0.6.0)"
    ;;
  *) die "usage: scripts/package.sh install DESTDIR PREFIX | deb [OUTDIR]" ;;
esac
