#!/usr/bin/env bash
# Build the Debian package ctmigrate_VERSION_ARCH.deb from a built checkout
# (npm ci && npm run build; `npm run package` does both steps). Prints the
# path of the .deb as the last line of its output; everything else goes to
# stderr.
#
#   packaging/build-deb.sh [--out DIR] [--hook FILE]
#
#   --out DIR    where the .deb goes (default dist/package)
#   --hook FILE  the libvirt hook to ship (default packaging/libvirt/qemu.d/ctmigrate;
#                also CTMIGRATE_HOOK=FILE)
#
# Needs: node, npm (the registry or its cache ~/.npm: production modules are
# installed afresh with `npm ci --omit=dev`), dpkg-dev and debhelper. Works
# in a scratch copy under DIR/build, removed afterwards
# (CTMIGRATE_KEEP_BUILD=1 keeps it); the checkout is only read.
set -euo pipefail

REPO=$(cd "$(dirname "$0")/.." && pwd)
OUT=$REPO/dist/package
HOOK=${CTMIGRATE_HOOK:-$REPO/packaging/libvirt/qemu.d/ctmigrate}

die() {
	echo "build-deb: $*" >&2
	exit 1
}

while [ $# -gt 0 ]; do
	case "$1" in
		--out) [ $# -ge 2 ] || die "--out needs a folder"; OUT=$2; shift 2 ;;
		--hook) [ $# -ge 2 ] || die "--hook needs a file"; HOOK=$2; shift 2 ;;
		-h|--help) sed -n '2,17s/^# \{0,1\}//p' "$0"; exit 0 ;;
		*) die "unknown argument '$1' (try --help)" ;;
	esac
done

for tool in node npm dpkg-buildpackage dh dpkg-parsechangelog; do
	command -v "$tool" >/dev/null || die "$tool not found (apt-get install -y --no-install-recommends dpkg-dev debhelper; node and npm 20 or later)"
done

BINDING=dist/adapters/conntrack/native/binding/build/Release/ctmigrate_netlink.node
for built in dist/adapters/cli/ctmigrated.js dist/adapters/cli/ctmigratectl.js "$BINDING"; do
	[ -f "$REPO/$built" ] || die "$built is missing: run npm ci && npm run build first (npm run package does)"
done
[ -f "$HOOK" ] || die "the libvirt hook $HOOK is missing; nothing was built"
[ -x "$HOOK" ] || die "the libvirt hook $HOOK is not executable; nothing was built"

VERSION=$(node -p "require('$REPO/package.json').version")
DEBVERSION=$(dpkg-parsechangelog -l "$REPO/packaging/debian/changelog" -S Version)
[ "$VERSION" = "$DEBVERSION" ] ||
	die "package.json says $VERSION but packaging/debian/changelog says $DEBVERSION: add a changelog entry (dch -v $VERSION)"
ARCH=$(dpkg-architecture -qDEB_HOST_ARCH)

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
SCRATCH=$OUT/build
TREE=$SCRATCH/ctmigrate-$VERSION
cleanup() {
	if [ "${CTMIGRATE_KEEP_BUILD:-}" = 1 ]; then
		echo "build-deb: kept the build tree $TREE" >&2
	else
		rm -rf "$SCRATCH"
	fi
}
trap cleanup EXIT
rm -rf "$SCRATCH"
mkdir -p "$TREE/stage"

echo "build-deb: staging /usr/lib/ctmigrate (npm ci --omit=dev)" >&2
STAGE=$TREE/stage
cp "$REPO/package.json" "$REPO/package-lock.json" "$STAGE/"
# The optional modules are usocket, dbus-next's native socket, and its
# build chain. Without it dbus-next reaches unix:path= buses (the system
# bus, the VMs' buses) through Node's net module; only abstract-socket
# addresses and fd passing need it, and ctmigrate uses neither.
# No install scripts: the native binding we use is built by `npm run build`
# and copied below.
(cd "$STAGE" && npm ci --omit=dev --omit=optional --ignore-scripts --prefer-offline \
	--no-audit --no-fund --loglevel=error) >&2
rm -f "$STAGE/package-lock.json" "$STAGE/node_modules/.package-lock.json"

# The compiled program without tests, source maps or build-time scripts.
mkdir -p "$STAGE/dist"
cp -a "$REPO/dist/adapters" "$REPO/dist/plugin" "$STAGE/dist/"
find "$STAGE/dist" -name '*.map' -delete
# tsc never deletes: leave out what a since-removed source compiled to.
(cd "$STAGE" && find dist -name '*.js' -print) | while IFS= read -r js; do
	src=${js#dist/}
	[ -f "$REPO/${src%.js}.ts" ] || { echo "build-deb: leaving out $js (no ${src%.js}.ts)" >&2; rm -f "$STAGE/$js"; }
done
rm -f "$STAGE/dist/adapters/conntrack/native/build-binding.js"
# Of the netlink binding's build folder only the object and its licence.
NATIVE=$STAGE/dist/adapters/conntrack/native/binding
rm -rf "$NATIVE"
mkdir -p "$NATIVE/build/Release"
cp "$REPO/$BINDING" "$NATIVE/build/Release/"
cp "$REPO/dist/adapters/conntrack/native/binding/LICENSE" "$NATIVE/"

# netlink's prebuilt fallback binaries: only this architecture's.
NODEARCH=$(node -p process.arch)
PREBUILDS=$STAGE/node_modules/netlink/prebuilds
if [ -d "$PREBUILDS" ]; then
	find "$PREBUILDS" -mindepth 1 -maxdepth 1 ! -name "linux-$NODEARCH" -exec rm -rf {} +
fi
# Files of the modules' own repositories and builds, not of the program.
find "$STAGE/node_modules" \( -name '.github' -o -name '.travis.yml' -o -name '.gitignore' \
	-o -name '.npmignore' -o -name '.eslintrc*' -o -name '.editorconfig' -o -name '*.map' \) -exec rm -rf {} +
rm -rf "$STAGE/node_modules/netlink/src" "$STAGE/node_modules/netlink/binding.gyp"
# Type declarations only (netlink lists them as a dependency); nothing loads them.
rm -rf "$STAGE/node_modules/netlink/node_modules/@types"
rmdir "$STAGE/node_modules/netlink/node_modules" 2>/dev/null || true
# The modules' tests and examples (never loaded; some embed old libraries).
find "$STAGE/node_modules" -mindepth 2 -type d \( -name test -o -name tests -o -name example -o -name examples \) \
	-prune -exec rm -rf {} +
rm -f "$STAGE/node_modules/hexy/test.html"
# Readable by all, executable by none: a module's tarball sets bits at
# random. debian/rules gives it back to the scripts.
find "$STAGE" -type d -exec chmod 755 {} +
find "$STAGE" -type f -exec chmod 644 {} +

echo "build-deb: assembling the package tree" >&2
cp -a "$REPO/packaging/debian" "$TREE/debian"
cp "$REPO/packaging/systemd/ctmigrated.service" "$TREE/debian/ctmigrate.ctmigrated.service"
cp "$REPO/packaging/systemd/ctmigrate-relay.service" "$TREE/debian/ctmigrate.ctmigrate-relay.service"
mkdir -p "$TREE/packaging/libvirt/qemu.d" "$TREE/packaging/dbus" "$TREE/packaging/man"
cp "$REPO/packaging/ctmigrate.conf" "$TREE/packaging/"
cp "$HOOK" "$TREE/packaging/libvirt/qemu.d/ctmigrate"
chmod 755 "$TREE/packaging/libvirt/qemu.d/ctmigrate"
mkdir -p "$TREE/packaging/criu"
cp "$REPO/packaging/criu/criu-action" "$TREE/packaging/criu/"
chmod 755 "$TREE/packaging/criu/criu-action"
cp "$REPO/packaging/dbus/org.ctmigrate1.conf" "$REPO/packaging/dbus/org.ctmigrate1.service" "$TREE/packaging/dbus/"
# The pages' footer names the version being packaged.
for page in ctmigrated.8 ctmigratectl.8; do
	sed "/^\.TH /s/\"ctmigrate [^\"]*\"/\"ctmigrate $VERSION\"/" "$REPO/packaging/man/$page" >"$TREE/packaging/man/$page"
done
cp "$REPO/README.md" "$TREE/"

# debian/copyright: ctmigrate's own terms (packaging/debian/copyright), then
# one stanza per bundled module with the licence its package.json declares;
# each module's licence text ships in its folder.
node - "$STAGE/node_modules" >>"$TREE/debian/copyright" <<'EOF'
const { readdirSync, readFileSync, existsSync } = require('node:fs');
const { join } = require('node:path');
const root = process.argv[2];
const found = [];
const walk = (dir, rel) => {
  for (const name of readdirSync(dir).sort()) {
    if (name.startsWith('.')) continue;
    if (name.startsWith('@')) { walk(join(dir, name), `${rel}${name}/`); continue; }
    const pkgFile = join(dir, name, 'package.json');
    if (!existsSync(pkgFile)) continue;
    const pkg = JSON.parse(readFileSync(pkgFile, 'utf8'));
    found.push({ path: `${rel}${name}`, pkg });
    const nested = join(dir, name, 'node_modules');
    if (existsSync(nested)) walk(nested, `${rel}${name}/node_modules/`);
  }
};
walk(root, '');
const licence = (pkg) => {
  const l = pkg.license ?? pkg.licenses;
  if (typeof l === 'string') return l;
  if (Array.isArray(l)) return l.map((x) => (typeof x === 'string' ? x : x.type)).join(' or ');
  if (l && typeof l === 'object' && l.type) return l.type;
  return 'unknown (see the files in the module)';
};
for (const { path, pkg } of found) {
  const who = typeof pkg.author === 'string' ? pkg.author : pkg.author?.name;
  process.stdout.write(`\nFiles: usr/lib/ctmigrate/node_modules/${path}/*\n`);
  process.stdout.write(`Copyright: ${who ? who.replace(/\s+/g, ' ') : `the authors of ${pkg.name}`}\n`);
  process.stdout.write(`License: ${licence(pkg)}\n`);
  process.stdout.write(` ${pkg.name} ${pkg.version}, bundled from the npm registry; its licence text, where\n the module has one, is in its folder.\n`);
}
EOF

echo "build-deb: dpkg-buildpackage" >&2
(cd "$TREE" && dpkg-buildpackage --build=binary --no-sign --no-check-builddeps) >&2 ||
	die "dpkg-buildpackage failed (output above)"

DEB=$SCRATCH/ctmigrate_${VERSION}_${ARCH}.deb
[ -f "$DEB" ] || die "dpkg-buildpackage made no $DEB"
mv -f "$DEB" "$OUT/"
echo "$OUT/ctmigrate_${VERSION}_${ARCH}.deb"
