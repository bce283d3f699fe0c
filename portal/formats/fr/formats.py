# French pages write dates the French way, on 24 hours (04/12/2026 17:20); Django's French formats otherwise.
DATE_FORMAT = "j F Y"
DATETIME_FORMAT = "d/m/Y H:i:s"
SHORT_DATE_FORMAT = "d/m/Y"
SHORT_DATETIME_FORMAT = "d/m/Y H:i"
TIME_FORMAT = "H:i"
