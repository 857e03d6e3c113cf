#!/usr/bin/env python3
"""The aports and OpenWrt SDK recipes agree with the package declaration.

  check_recipes.py          check
  check_recipes.py --fix    first rewrite the APKBUILD's sha512sums of its
                            local sources (what `abuild checksum` does)

packaging/alpine/APKBUILD and openwrt/Makefile build from source with their
own tools, so they name the installed files again. This checks that they
install what packaging/xapsd.pkg.toml declares, at the version Cargo.toml
has, that the APKBUILD's checksums match its local sources, and that the
OpenWrt Makefile uses the packages feed's Rust support.
"""

from __future__ import annotations

import hashlib
import re
import sys

from pkgtest import ROOT, Checks, declaration


def fix_sums() -> None:
    path = ROOT / "packaging/alpine/APKBUILD"
    text = path.read_text()
    for name in ("xapsd.initd", "xapsd.confd"):
        digest = hashlib.sha512((ROOT / "packaging/alpine" / name).read_bytes()).hexdigest()
        text = re.sub(rf"^[0-9a-f]{{128}}  {re.escape(name)}$", f"{digest}  {name}", text, flags=re.M)
    path.write_text(text)


def main() -> int:
    if sys.argv[1:] == ["--fix"]:
        fix_sums()
    c = Checks()
    decl = declaration()
    pkg = decl["package"]

    apkbuild = (ROOT / "packaging/alpine/APKBUILD").read_text()
    var = dict(re.findall(r'^(\w+)="?([^"\n]*)"?$', apkbuild, re.M))
    c.equal(var.get("pkgname"), pkg["name"], "APKBUILD pkgname")
    c.equal(var.get("pkgver"), pkg["version"], "APKBUILD pkgver is Cargo.toml's version")
    c.equal(var.get("pkgrel"), str(decl["flavor"]["alpine"]["release"]), "APKBUILD pkgrel")
    c.equal(var.get("license"), pkg["license"], "APKBUILD license")
    c.equal(var.get("install"), "$pkgname.pre-install", "APKBUILD install= names the pre-install")
    for path in (f["path"] for f in decl["flavor"]["alpine"]["files"]):
        d, name = path.rsplit("/", 1)
        c.check(f'"$pkgdir"{d}/' in apkbuild, f"APKBUILD installs into {d}/ ({name})")
    sums = re.search(r'sha512sums="\n(.*?)"', apkbuild, re.S).group(1).split("\n")
    for line in filter(None, sums):
        digest, name = line.split()
        local = ROOT / "packaging/alpine" / name
        if local.exists():
            c.equal(digest, hashlib.sha512(local.read_bytes()).hexdigest(),
                    f"APKBUILD sha512 of {name} (after a change: check_recipes.py --fix)")

    makefile = (ROOT / "openwrt/Makefile").read_text()
    mvar = dict(re.findall(r"^(PKG_\w+):=(.*)$", makefile, re.M))
    c.equal(mvar.get("PKG_NAME"), pkg["name"], "openwrt/Makefile PKG_NAME")
    c.equal(mvar.get("PKG_VERSION"), pkg["version"], "openwrt/Makefile PKG_VERSION is Cargo.toml's")
    c.equal(mvar.get("PKG_RELEASE"), str(decl["flavor"]["openwrt"]["release"]), "openwrt/Makefile PKG_RELEASE")
    c.check("include $(TOPDIR)/feeds/packages/lang/rust/rust-package.mk" in makefile,
            "openwrt/Makefile includes the feed's rust-package.mk")
    c.check("Build/Compile/Cargo" in makefile, "openwrt/Makefile compiles with Build/Compile/Cargo")
    c.check("rust/host" in mvar.get("PKG_BUILD_DEPENDS", ""), "openwrt/Makefile build-depends on rust/host")
    c.check("USERID:=xapsd:xapsd" in makefile, "openwrt/Makefile declares the xapsd user")
    for f in decl["flavor"]["openwrt"]["files"]:
        c.check(f"$(1){f['path'].rsplit('/', 1)[0]}" in makefile and f["path"].rsplit("/", 1)[1]
                in makefile, f"openwrt/Makefile installs {f['path']}")
        if f["from"] != "@binary":
            src = "./" + f["from"].removeprefix("openwrt/")
            c.check(src in makefile, f"openwrt/Makefile installs it from {src}")
    conf = re.search(r"define Package/xapsd/conffiles\n(.*?)endef", makefile, re.S).group(1).split()
    want = [f["path"] for f in decl["flavor"]["openwrt"]["files"] if f.get("conffile")]
    c.equal(conf, want, "openwrt/Makefile conffiles")
    return c.finish()


if __name__ == "__main__":
    sys.exit(main())
