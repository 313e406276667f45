include $(BR2_EXTERNAL_CHARIOTD_PATH)/chariotd/chariotd.mk
