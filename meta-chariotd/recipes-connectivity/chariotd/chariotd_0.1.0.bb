SUMMARY = "Owns the device's connection to AWS IoT Core"
DESCRIPTION = "chariotd owns the device's single MQTT connection to AWS IoT \
               Core and offers its services to the rest of the system as \
               files and processes: device shadows as configuration files \
               with notify commands, a spool directory of messages to \
               publish, fleet provisioning and certificate rotation, secure \
               tunnelling."
# chariotd has no public home yet: a placeholder (.invalid never resolves)
# until it has one. The README is installed in chariotd-doc.
HOMEPAGE = "https://chariotd.invalid/"
SECTION = "net"
LICENSE = "MIT"
LIC_FILES_CHKSUM = "file://LICENSE;md5=1a6704e0c06d4826efccee27b582a882"

# The version is VERSION in lib/options.py (tests/test_package_yocto.py checks).
# The source is the chariotd tree around this layer, as with Buildroot's
# local site method; CHARIOTD_SRCDIR in local.conf picks another checkout.
CHARIOTD_SRCDIR_DEFAULT := "${@os.path.normpath(os.path.join(d.getVar('THISDIR'), '../../..'))}"
CHARIOTD_SRCDIR ??= "${CHARIOTD_SRCDIR_DEFAULT}"
# externalsrc builds that tree in place: nothing to fetch.
SRC_URI = ""
EXTERNALSRC = "${CHARIOTD_SRCDIR}"
EXTERNALSRC_BUILD = "${WORKDIR}/build"
CVE_PRODUCT = "chariotd"

inherit externalsrc python3native update-rc.d systemd

# runit: the service directory /etc/sv/chariotd (package chariotd-runit),
# linked from /etc/service, instead of the sysvinit script. The image needs
# runsvdir, runsv, sv and svlogd (BusyBox's or runit's) and runsvdir started
# from /etc/inittab (see meta-chariotd/README.md).
PACKAGECONFIG ??= ""
PACKAGECONFIG[runit] = ",,,${PN}-runit"

INITSCRIPT_PACKAGES = "${@bb.utils.contains('PACKAGECONFIG', 'runit', '', '${PN}', d)}"
INITSCRIPT_NAME = "chariotd"
INITSCRIPT_PARAMS = "defaults 90 10"

SYSTEMD_SERVICE:${PN} = "chariotd.service"

do_configure[noexec] = "1"

# Only chariotd.py and lib/, without a developer's caches, compiled (with
# checked-hash, as build dates are reset): a read-only root gives Python
# nowhere to cache compiled modules, so each start would compile them again.
do_compile() {
    rm -rf ${B}/chariotd
    for f in chariotd.py $(cd ${S} && find lib -name '*.py'); do
        install -D -m 0644 ${S}/$f ${B}/chariotd/$f
    done
    ${PYTHON} -m compileall -q --invalidation-mode checked-hash \
        -s ${B} -p ${nonarch_libdir} ${B}/chariotd/lib
}

# The same paths as the Buildroot package: /usr/lib/chariotd/chariotd.py and
# lib/, /usr/bin/chariotd, /etc/default/chariotd, and the init files.
do_install() {
    for f in $(cd ${B} && find chariotd -type f); do
        install -D -m 0644 ${B}/$f ${D}${nonarch_libdir}/$f
    done
    chmod 0755 ${D}${nonarch_libdir}/chariotd/chariotd.py
    install -d ${D}${bindir}
    ln -sf ${nonarch_libdir}/chariotd/chariotd.py ${D}${bindir}/chariotd
    install -D -m 0644 ${S}/init/default/chariotd ${D}${sysconfdir}/default/chariotd
    install -D -m 0644 ${S}/README.md ${D}${docdir}/chariotd/README.md
    for f in ${S}/examples/jobs/*.sh; do
        install -D -m 0755 $f ${D}${datadir}/chariotd/jobs/$(basename $f)
    done

    if ${@bb.utils.contains('PACKAGECONFIG', 'runit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/init/runit/chariotd/run ${D}${sysconfdir}/sv/chariotd/run
        install -m 0755 ${S}/init/runit/chariotd/finish ${D}${sysconfdir}/sv/chariotd/finish
        install -D -m 0755 ${S}/init/runit/chariotd/log/run ${D}${sysconfdir}/sv/chariotd/log/run
        # runsv writes its state in supervise/: into /run, for a read-only root
        ln -sfn /run/chariotd.supervise ${D}${sysconfdir}/sv/chariotd/supervise
        ln -sfn /run/chariotd-log.supervise ${D}${sysconfdir}/sv/chariotd/log/supervise
        install -d ${D}${sysconfdir}/service
        ln -sfn ../sv/chariotd ${D}${sysconfdir}/service/chariotd
    elif ${@bb.utils.contains('DISTRO_FEATURES', 'sysvinit', 'true', 'false', d)}; then
        install -D -m 0755 ${S}/init/sysvinit/S90chariotd ${D}${INIT_D_DIR}/chariotd
    fi
    if ${@bb.utils.contains('DISTRO_FEATURES', 'systemd', 'true', 'false', d)}; then
        install -D -m 0644 ${S}/init/systemd/chariotd.service \
            ${D}${systemd_system_unitdir}/chariotd.service
    fi
}

# chariotd-jobs: the AWS IoT Jobs handlers of examples/jobs/ (the names AWS's
# managed job templates call), for --jobs=THING:/usr/share/chariotd/jobs.
PACKAGES =+ "${PN}-jobs ${PN}-runit"

FILES:${PN} += "${nonarch_libdir}/chariotd"
FILES:${PN}-jobs += "${datadir}/chariotd/jobs"
FILES:${PN}-runit += "${sysconfdir}/sv ${sysconfdir}/service"
CONFFILES:${PN} = "${sysconfdir}/default/chariotd"

# What lib/ imports (tests/test_package_yocto.py keeps the list whole), and paho.
RDEPENDS:${PN} = "python3-core \
                  python3-crypt \
                  python3-ctypes \
                  python3-datetime \
                  python3-fcntl \
                  python3-io \
                  python3-json \
                  python3-logging \
                  python3-netclient \
                  python3-paho-mqtt \
                  python3-shell"
RDEPENDS:${PN}-jobs = "${PN}"
RDEPENDS:${PN}-runit = "${PN}"
