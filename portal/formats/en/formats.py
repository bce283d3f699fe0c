# English pages write dates as ISO 8601 (2026-12-04 17:20), as the audit trails and logs security teams compare
# them with do; Django's own English formats are American (12/04/2026 5:20 p.m.).
DATE_FORMAT = "Y-m-d"
DATETIME_FORMAT = "Y-m-d H:i:s"
SHORT_DATE_FORMAT = "Y-m-d"
SHORT_DATETIME_FORMAT = "Y-m-d H:i"
TIME_FORMAT = "H:i"
