################################################################################
#
# chariotd
#
################################################################################

# Same as VERSION in lib/options.py (tests/test_init_scripts.py checks).
CHARIOTD_VERSION = 0.1.0
# The chariotd source tree this package sits in; to build another checkout,
# set CHARIOTD_OVERRIDE_SRCDIR in local.mk (see buildroot-package/README.md).
CHARIOTD_SITE = $(CHARIOTD_PKGDIR)/../..
CHARIOTD_SITE_METHOD = local
CHARIOTD_LICENSE = MIT
CHARIOTD_LICENSE_FILES = LICENSE

# Only chariotd.py, lib/, init/ and the job handlers of examples/jobs/ are
# installed: leave out the rest of a developer's tree, virtualenvs (.venv*,
# CI's in .ci/), the MicroPython npm package (.node) and Buildroot output
# included.
CHARIOTD_OVERRIDE_SRCDIR_RSYNC_EXCLUSIONS = \
	--include=/examples/ --include=/examples/jobs/*** \
	--exclude=/.venv* --exclude=/.ci --exclude=/.node --exclude=/tests --exclude=/emulator \
	--exclude=/examples/* --exclude=/build --exclude=/output \
	--exclude=__pycache__ --exclude=/.hypothesis --exclude=/.pytest_cache \
	--exclude=/.ruff_cache

define CHARIOTD_INSTALL_TARGET_CMDS
	rm -rf $(TARGET_DIR)/usr/lib/chariotd
	$(INSTALL) -D -m 0755 $(@D)/chariotd.py \
		$(TARGET_DIR)/usr/lib/chariotd/chariotd.py
	cp -dpfr $(@D)/lib $(TARGET_DIR)/usr/lib/chariotd/lib
	mkdir -p $(TARGET_DIR)/usr/bin
	ln -sf ../lib/chariotd/chariotd.py $(TARGET_DIR)/usr/bin/chariotd
	$(INSTALL) -D -m 0644 $(@D)/init/default/chariotd \
		$(TARGET_DIR)/etc/default/chariotd
endef

ifeq ($(BR2_PACKAGE_CHARIOTD_JOB_HANDLERS),y)
# Handlers for AWS's managed job templates, for --jobs=THING:/usr/share/chariotd/jobs
define CHARIOTD_INSTALL_JOB_HANDLERS
	$(INSTALL) -d -m 0755 $(TARGET_DIR)/usr/share/chariotd/jobs
	cp -dpfr $(@D)/examples/jobs/. $(TARGET_DIR)/usr/share/chariotd/jobs/
endef
CHARIOTD_POST_INSTALL_TARGET_HOOKS += CHARIOTD_INSTALL_JOB_HANDLERS
endif

# A read-only root leaves Python no place to cache compiled modules, so
# every start would compile lib/ again: compile it here. checked-hash,
# because Buildroot may reset file times (reproducible builds), which would
# make timestamp-checked caches look stale.
ifeq ($(BR2_PACKAGE_PYTHON3_PY_ONLY),)
CHARIOTD_DEPENDENCIES += host-python3
define CHARIOTD_COMPILE_PYC
	$(HOST_DIR)/bin/python3 -m compileall -q \
		--invalidation-mode checked-hash \
		-s $(TARGET_DIR) -p / $(TARGET_DIR)/usr/lib/chariotd/lib
endef
CHARIOTD_POST_INSTALL_TARGET_HOOKS += CHARIOTD_COMPILE_PYC
endif

define CHARIOTD_INSTALL_INIT_SYSTEMD
	$(INSTALL) -D -m 0644 $(@D)/init/systemd/chariotd.service \
		$(TARGET_DIR)/usr/lib/systemd/system/chariotd.service
endef

ifeq ($(BR2_PACKAGE_CHARIOTD_RUNIT),y)
# runsv writes its state under supervise/; /etc may be read-only, so those
# are links into /run, where runsv creates the directories.
define CHARIOTD_INSTALL_RUNIT
	$(INSTALL) -D -m 0755 $(@D)/init/runit/chariotd/run \
		$(TARGET_DIR)/etc/sv/chariotd/run
	$(INSTALL) -D -m 0755 $(@D)/init/runit/chariotd/finish \
		$(TARGET_DIR)/etc/sv/chariotd/finish
	$(INSTALL) -D -m 0755 $(@D)/init/runit/chariotd/log/run \
		$(TARGET_DIR)/etc/sv/chariotd/log/run
	ln -sfn /run/chariotd.supervise $(TARGET_DIR)/etc/sv/chariotd/supervise
	ln -sfn /run/chariotd-log.supervise \
		$(TARGET_DIR)/etc/sv/chariotd/log/supervise
	mkdir -p $(TARGET_DIR)/etc/service
	ln -sfn ../sv/chariotd $(TARGET_DIR)/etc/service/chariotd
endef
CHARIOTD_POST_INSTALL_TARGET_HOOKS += CHARIOTD_INSTALL_RUNIT

define CHARIOTD_BUSYBOX_CONFIG_FIXUPS
	$(call KCONFIG_ENABLE_OPT,CONFIG_RUNSV)
	$(call KCONFIG_ENABLE_OPT,CONFIG_RUNSVDIR)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SV)
	$(call KCONFIG_ENABLE_OPT,CONFIG_SVLOGD)
endef
else
define CHARIOTD_INSTALL_INIT_SYSV
	$(INSTALL) -D -m 0755 $(@D)/init/sysvinit/S90chariotd \
		$(TARGET_DIR)/etc/init.d/S90chariotd
endef

# S90chariotd uses start-stop-daemon's long options and logs through logger.
define CHARIOTD_BUSYBOX_CONFIG_FIXUPS
	$(call KCONFIG_ENABLE_OPT,CONFIG_START_STOP_DAEMON)
	$(call KCONFIG_ENABLE_OPT,CONFIG_FEATURE_START_STOP_DAEMON_LONG_OPTIONS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_LONG_OPTS)
	$(call KCONFIG_ENABLE_OPT,CONFIG_LOGGER)
endef
endif

$(eval $(generic-package))
