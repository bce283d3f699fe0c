"""The portal's one settings module: everything comes from the environment.

With no variable set at all it runs on a bare machine: SQLite and a file-based
Celery broker under ``var/``, a local-memory cache, and a secret key generated
on first start. Production sets DATABASE_URL, CELERY_BROKER_URL and REDIS_URL.
"""

import os
import tempfile
from pathlib import Path
from urllib.parse import urlsplit

import dj_database_url

from core.env import env_bool, env_int, env_list, env_networks, env_str, persistent_secret, private_dir, private_file

BASE_DIR = Path(__file__).resolve().parent.parent
VAR_DIR = Path(env_str("PORTAL_VAR_DIR") or BASE_DIR / "var").resolve()
# For the portal's user only (0700; its files 0600): the database, broker, secrets and metrics live there (issue 14,
# item 8). bin/run closes an older var/ too; the system check portal.E004 names anything left open.
private_dir(VAR_DIR)

DEBUG = env_bool("DEBUG", False)
# The one file settings may write: a key must exist before anything is signed (made once, atomically; core/env.py).
SECRET_KEY = persistent_secret("SECRET_KEY", VAR_DIR / "secret_key")

# The public URL of the portal: generated managed configs and mirror URLs use it. Unset, `bin/run` (manage.py serve)
# sets it from --host/--port for itself and its children (portal/base_url.py); the default is for other commands.
PORTAL_BASE_URL = (env_str("PORTAL_BASE_URL") or "http://localhost:8000").rstrip("/")
_base_host = urlsplit(PORTAL_BASE_URL).hostname
ALLOWED_HOSTS = env_list("ALLOWED_HOSTS", ["localhost", "127.0.0.1", "[::1]"])
if _base_host and _base_host not in ALLOWED_HOSTS:
    ALLOWED_HOSTS.append(_base_host)
CSRF_TRUSTED_ORIGINS = env_list("CSRF_TRUSTED_ORIGINS", [])

# Where downloaded packages are stored (content-addressed) and published.
PORTAL_STORE_ROOT = Path(env_str("PORTAL_STORE_ROOT") or VAR_DIR / "store").resolve()

INSTALLED_APPS = [
    "django.contrib.auth",
    "django.contrib.contenttypes",
    "django.contrib.sessions",
    "django.contrib.messages",
    "whitenoise.runserver_nostatic",
    "django.contrib.staticfiles",
    "rest_framework",
    "django_filters",
    "drf_spectacular",
    "drf_spectacular_sidecar",
    "django_celery_beat",
    "axes",
    # Second factors (issue 16): TOTP devices and single-use recovery codes.
    "django_otp",
    "django_otp.plugins.otp_totp",
    "django_otp.plugins.otp_static",
    # Layers, lowest first: each imports only from those above it in this list.
    "core",
    "mirror",
    "fleet",
    "portal",
]

MIDDLEWARE = [
    # First: every later reader of REMOTE_ADDR (axes, the audit log, metrics) sees the client behind TRUSTED_PROXIES.
    "core.middleware.ClientAddressMiddleware",
    "django.middleware.security.SecurityMiddleware",
    # Health reports skip the rest (fleet/middleware.py): they are most of the traffic.
    "fleet.middleware.ReportShortcutMiddleware",
    "core.middleware.ContentSecurityPolicyMiddleware",
    "whitenoise.middleware.WhiteNoiseMiddleware",
    "django.contrib.sessions.middleware.SessionMiddleware",
    # The browser's language (Accept-Language or the language cookie) for everyone, signed in or not.
    "django.middleware.locale.LocaleMiddleware",
    "django.middleware.common.CommonMiddleware",
    "django.middleware.csrf.CsrfViewMiddleware",
    "django.contrib.auth.middleware.AuthenticationMiddleware",
    # request.user.is_verified(): whether this session passed its second factor (django-otp).
    "django_otp.middleware.OTPMiddleware",
    # A session idle or open too long, or whose account was deactivated or lost its role, ends here (core.sessions).
    "core.session_middleware.SessionTimeoutMiddleware",
    # Someone who must change their password (a generated one, or an admin's reset) reaches nothing else first.
    "core.password_middleware.PasswordChangeRequiredMiddleware",
    # Then: a session that owes a second factor (a set-up its role requires, or a code) reaches nothing else.
    "core.mfa_middleware.MfaRequiredMiddleware",
    # After authentication: a signed-in person's chosen language wins over the browser's.
    "core.middleware.UserLanguageMiddleware",
    "django.contrib.messages.middleware.MessageMiddleware",
    "django.middleware.clickjacking.XFrameOptionsMiddleware",
    # Last, as django-axes asks: it turns a locked-out login into a response.
    "axes.middleware.AxesMiddleware",
]

ROOT_URLCONF = "portal.urls"
WSGI_APPLICATION = "portal.wsgi.application"

TEMPLATES = [
    {
        "BACKEND": "django.template.backends.django.DjangoTemplates",
        "DIRS": [BASE_DIR / "templates"],
        "APP_DIRS": True,
        "OPTIONS": {
            "context_processors": [
                "django.template.context_processors.request",
                "django.contrib.auth.context_processors.auth",
                "django.contrib.messages.context_processors.messages",
                "core.context_processors.portal",
            ],
        },
    },
]

# --- Database -----------------------------------------------------------------
DATABASE_URL = env_str("DATABASE_URL") or f"sqlite:///{VAR_DIR / 'portal.sqlite3'}"
DATABASES = {"default": dj_database_url.parse(DATABASE_URL, conn_max_age=env_int("DATABASE_CONN_MAX_AGE", 60))}
if DATABASES["default"]["ENGINE"] == "django.db.backends.sqlite3":
    # Connections are kept like PostgreSQL's: opening one (and its PRAGMAs) per request was
    # most of the CPU of a 304 answered by the portal (bench/serve.py).
    # Web, worker and beat write to the same file: WAL lets readers go on while one
    # writes, IMMEDIATE takes the write lock up front so two writers queue instead of
    # failing with "database is locked" half-way through a transaction.
    DATABASES["default"]["OPTIONS"] = {
        "timeout": 30,
        "transaction_mode": "IMMEDIATE",
        "init_command": "PRAGMA journal_mode=WAL; PRAGMA synchronous=NORMAL;",
    }
    # Made 0600 before SQLite makes it with the umask's 0644: it holds the session keys (issue 14, item 8).
    if DATABASES["default"]["NAME"] not in ("", ":memory:"):
        private_file(Path(DATABASES["default"]["NAME"]))
    # A file, not memory, for the test database: tests that start real workers and
    # processes must see the same database as the test itself. One per test process, so
    # that two test runs on one machine never share (and delete) each other's.
    DATABASES["default"]["TEST"] = {"NAME": str(Path(tempfile.gettempdir()) / f"portal-test-{os.getpid()}.sqlite3")}
elif DATABASES["default"]["ENGINE"] == "django.db.backends.postgresql":
    # The health-report path runs its two statements prepared (fleet/services/ingest.py): parsing and
    # planning them anew was most of PostgreSQL's CPU per report. Django's own queries are
    # bound on the client and never prepared. Behind PgBouncer in transaction mode older than
    # 1.21 (no max_prepared_statements), set DATABASE_PREPARED_STATEMENTS=false.
    DATABASES["default"].setdefault("OPTIONS", {})["prepare_threshold"] = (
        0 if env_bool("DATABASE_PREPARED_STATEMENTS", True) else None
    )
DEFAULT_AUTO_FIELD = "django.db.models.BigAutoField"

# --- Cache and locks ----------------------------------------------------------
REDIS_URL = env_str("REDIS_URL")
if REDIS_URL:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.redis.RedisCache", "LOCATION": REDIS_URL}}
else:
    CACHES = {"default": {"BACKEND": "django.core.cache.backends.locmem.LocMemCache"}}

# --- Celery -------------------------------------------------------------------
# Where the embedded broker keeps its message files (another folder: another, separate queue).
BROKER_DIR = Path(env_str("PORTAL_BROKER_DIR") or VAR_DIR / "broker").resolve()
CELERY_BROKER_URL = env_str("CELERY_BROKER_URL") or "filesystem://"
CELERY_BROKER_TRANSPORT_OPTIONS = {}
if CELERY_BROKER_URL.startswith("filesystem://"):
    # kombu's file transport: producer and consumer share one folder of message files (made 0700 by portal.celery).
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "data_folder_in": str(BROKER_DIR / "messages"),
        "data_folder_out": str(BROKER_DIR / "messages"),
        "control_folder": str(BROKER_DIR / "control"),
        "store_processed": False,
    }
    # kombu's channel, writing each message under a name the consumer ignores until it is whole (portal/broker.py).
    CELERY_BROKER_TRANSPORT = "portal.broker:Transport"
elif CELERY_BROKER_URL.startswith(("redis://", "rediss://")):
    # acks_late: a task whose worker died (SIGKILL, a lost host) stays unacknowledged in Redis, and a living worker
    # takes it again once it is CELERY_VISIBILITY_TIMEOUT seconds old (kombu's default, an hour). A sync redelivered
    # while its first worker still runs is a no-op (mirror.services.sync.claim_run); one whose worker died is taken
    # over and resumes its download. Each worker looks for such tasks every CELERY_VISIBILITY_CHECK_SECONDS.
    CELERY_BROKER_TRANSPORT_OPTIONS = {
        "visibility_timeout": env_int("CELERY_VISIBILITY_TIMEOUT", 3600),
        "unacked_restore_interval": env_int("CELERY_VISIBILITY_CHECK_SECONDS", 10),
        "unacked_restore_throttle": 1,
    }
CELERY_BROKER_CONNECTION_RETRY_ON_STARTUP = True
CELERY_TASK_IGNORE_RESULT = True
CELERY_TASK_ACKS_LATE = True
CELERY_TASK_REJECT_ON_WORKER_LOST = True
CELERY_WORKER_PREFETCH_MULTIPLIER = 1
# django-celery-beat's (the schedule in the database), sending only while it holds the leader lock: a second beat,
# on another node or started by mistake, waits as a standby instead of sending every task twice (portal/beat.py).
CELERY_BEAT_SCHEDULER = "portal.beat:LeaderScheduler"
# The Redis lock's TTL: a dead leader's standby takes over within this many seconds (renewed every third of it).
BEAT_LOCK_SECONDS = env_int("PORTAL_BEAT_LOCK_SECONDS", 30)
CELERY_TIMEZONE = "UTC"

# --- Auth ---------------------------------------------------------------------
AUTHENTICATION_BACKENDS = [
    # First, as django-axes asks: it refuses a locked-out user before any password check.
    "axes.backends.AxesStandaloneBackend",
    "django.contrib.auth.backends.ModelBackend",
]
AUTH_PASSWORD_VALIDATORS = [
    {"NAME": "django.contrib.auth.password_validation.UserAttributeSimilarityValidator"},
    {"NAME": "django.contrib.auth.password_validation.MinimumLengthValidator", "OPTIONS": {"min_length": 10}},
    {"NAME": "django.contrib.auth.password_validation.CommonPasswordValidator"},
    {"NAME": "django.contrib.auth.password_validation.NumericPasswordValidator"},
]
LOGIN_URL = "login"
# Users, roles and API tokens change only with a password given this many minutes ago at most (a sign-in or the
# confirmation page, /reauthenticate/), or with an admin-scope token (core.services; issue 14, item 7).
REAUTH_MINUTES = env_int("REAUTH_MINUTES", 15)
LOGIN_REDIRECT_URL = "dashboard"
# The name authenticator apps show beside the account (core.mfa, django-otp's TOTP devices).
OTP_TOTP_ISSUER = "Defender offline updates"
LOGOUT_REDIRECT_URL = "login"

# LDAP / Active Directory sign-in (core.ldap; README.md, Sign-in): off unless LDAP_URL is set.
LDAP_URL = env_str("LDAP_URL", "")  # ldap://host or ldaps://host[:port]
LDAP_START_TLS = env_bool("LDAP_START_TLS", False)
LDAP_CA_FILE = env_str("LDAP_CA_FILE", "")  # PEM CA(s) the server's certificate must chain to; else the system's
LDAP_BIND_DN = env_str("LDAP_BIND_DN", "")
LDAP_BIND_PASSWORD = env_str("LDAP_BIND_PASSWORD", "")  # or LDAP_BIND_PASSWORD_FILE
LDAP_USER_SEARCH_BASE = env_str("LDAP_USER_SEARCH_BASE", "")
LDAP_USER_FILTER = env_str("LDAP_USER_FILTER", "(sAMAccountName=%(user)s)")  # Active Directory's; OpenLDAP: uid
LDAP_GROUP_ATTRIBUTE = env_str("LDAP_GROUP_ATTRIBUTE", "memberOf")
LDAP_GROUP_SEARCH_BASE = env_str("LDAP_GROUP_SEARCH_BASE", "")
LDAP_GROUP_FILTER = env_str("LDAP_GROUP_FILTER", "(|(member=%(dn)s)(uniqueMember=%(dn)s))")
LDAP_TIMEOUT = env_int("LDAP_TIMEOUT", 5)  # seconds: a directory that is down must not hang the sign-in page
if LDAP_URL:
    # After axes (a locked-out name never reaches the directory), before ModelBackend (core.ldap says why).
    AUTHENTICATION_BACKENDS.insert(
        AUTHENTICATION_BACKENDS.index("django.contrib.auth.backends.ModelBackend"), "core.ldap.LdapBackend"
    )

AXES_FAILURE_LIMIT = env_int("LOGIN_FAILURE_LIMIT", 5)
AXES_COOLOFF_TIME = env_int("LOGIN_LOCKOUT_MINUTES", 15) / 60  # hours
AXES_LOCKOUT_PARAMETERS = [["username", "ip_address"]]
AXES_RESET_ON_SUCCESS = True
AXES_LOCKOUT_TEMPLATE = "registration/locked_out.html"
AXES_VERBOSE = False

# --- OpenID Connect (issue 16; core/oidc.py, deploy/README.md) --------------------------------------------------
# On when a client id and a provider are set: the issuer (its /.well-known/openid-configuration names the endpoints,
# read when first needed) or the OIDC_OP_* endpoints themselves. The password form stays beside the provider's
# button: a local admin can always sign in (break-glass). Roles come from the admin's role mappings (/users/role-
# mappings/) matched against the OIDC_ROLE_CLAIM claims (comma-separated: "groups,roles" for Entra ID app roles).
OIDC_PROVIDER_NAME = env_str("OIDC_PROVIDER_NAME") or "OpenID Connect"
OIDC_ISSUER = (env_str("OIDC_ISSUER") or "").rstrip("/")
OIDC_OP_AUTHORIZATION_ENDPOINT = env_str("OIDC_OP_AUTHORIZATION_ENDPOINT") or ""
OIDC_OP_TOKEN_ENDPOINT = env_str("OIDC_OP_TOKEN_ENDPOINT") or ""
OIDC_OP_USER_ENDPOINT = env_str("OIDC_OP_USER_ENDPOINT") or ""
OIDC_OP_JWKS_ENDPOINT = env_str("OIDC_OP_JWKS_ENDPOINT") or ""
OIDC_RP_CLIENT_ID = env_str("OIDC_RP_CLIENT_ID") or ""
OIDC_RP_CLIENT_SECRET = env_str("OIDC_RP_CLIENT_SECRET") or ""  # or OIDC_RP_CLIENT_SECRET_FILE
OIDC_RP_SIGN_ALGO = env_str("OIDC_RP_SIGN_ALGO") or "RS256"
OIDC_RP_SCOPES = env_str("OIDC_RP_SCOPES") or "openid email profile"
OIDC_ROLE_CLAIM = env_list("OIDC_ROLE_CLAIM", ["groups"])
OIDC_USERNAME_CLAIM = env_str("OIDC_USERNAME_CLAIM") or "preferred_username"
OIDC_TIMEOUT = env_int("OIDC_TIMEOUT", 10)  # seconds: a provider that is down is a sign-in error, soon
OIDC_PROXY = env_str("OIDC_PROXY") or ""
OIDC_CA_BUNDLE = env_str("OIDC_CA_BUNDLE") or ""  # a provider behind an internal CA
OIDC_USE_PKCE = True
OIDC_USE_NONCE = True
OIDC_AUTHENTICATE_CLASS = "core.oidc.OIDCSignInView"
OIDC_CALLBACK_CLASS = "core.oidc.OIDCCallbackView"
if OIDC_RP_CLIENT_ID and (OIDC_ISSUER or OIDC_OP_AUTHORIZATION_ENDPOINT):
    AUTHENTICATION_BACKENDS.insert(1, "core.oidc.OIDCBackend")  # after axes', before the password's

SESSION_COOKIE_HTTPONLY = True
SESSION_COOKIE_SECURE = PORTAL_BASE_URL.startswith("https://")
CSRF_COOKIE_SECURE = SESSION_COOKIE_SECURE
# A signed-in session ends after this long without a request, and this long after its sign-in whatever happens
# (core.sessions, core.session_middleware); the cookie lives as long as the longest a session can.
SESSION_IDLE_MINUTES = env_int("SESSION_IDLE_MINUTES", 30)
SESSION_ABSOLUTE_HOURS = env_int("SESSION_ABSOLUTE_HOURS", 12)  # both at least 1 (a system check, core.sessions)
SESSION_COOKIE_AGE = SESSION_ABSOLUTE_HOURS * 3600
X_FRAME_OPTIONS = "DENY"
SECURE_CONTENT_TYPE_NOSNIFF = True
SECURE_REFERRER_POLICY = "same-origin"
# Every script, style, image and request from the portal itself, none inline (core/middleware.py; issue 14, item 12).
# Empty: no header (a proxy in front sets its own).
CONTENT_SECURITY_POLICY = env_str(
    "CONTENT_SECURITY_POLICY",
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; font-src 'self'; "
    "connect-src 'self'; object-src 'none'; base-uri 'self'; form-action 'self'; frame-ancestors 'none'",
)
if env_bool("BEHIND_TLS_PROXY", False):
    SECURE_PROXY_SSL_HEADER = ("HTTP_X_FORWARDED_PROTO", "https")

# --- API ----------------------------------------------------------------------
REST_FRAMEWORK = {
    "DEFAULT_AUTHENTICATION_CLASSES": [
        "core.authentication.ApiTokenAuthentication",
        "rest_framework.authentication.SessionAuthentication",
    ],
    # JSON only: the browsable API links to the DRF website, and /api/docs/ serves people better.
    "DEFAULT_RENDERER_CLASSES": ["rest_framework.renderers.JSONRenderer"],
    "DEFAULT_PERMISSION_CLASSES": ["core.roles.HasRole"],
    "DEFAULT_PAGINATION_CLASS": "core.api.pagination.PortalPagination",
    "DEFAULT_FILTER_BACKENDS": [
        "django_filters.rest_framework.DjangoFilterBackend",
        "rest_framework.filters.OrderingFilter",
    ],
    "DEFAULT_SCHEMA_CLASS": "core.api.schema.PortalAutoSchema",
    "EXCEPTION_HANDLER": "core.api.errors.exception_handler",
    "UNAUTHENTICATED_USER": None,
}
# /api/schema/ and /api/docs/ describe every resource and field: for signed-in users (or API tokens) only.
API_DOCS_REQUIRE_SIGN_IN = env_bool("API_DOCS_REQUIRE_SIGN_IN", True)
SPECTACULAR_SETTINGS = {
    "TITLE": "Defender offline update portal API",
    "DESCRIPTION": "Mirrors, signature packages, rings and endpoints of the offline security-intelligence update portal.",
    "VERSION": "1",
    "SERVE_INCLUDE_SCHEMA": False,
    # The schema and Swagger UI need the viewer role unless API_DOCS_REQUIRE_SIGN_IN=false (issue 14, item 12).
    "SERVE_PERMISSIONS": ["core.roles.ApiDocsPermission"],
    "SWAGGER_UI_DIST": "SIDECAR",
    "SWAGGER_UI_FAVICON_HREF": "SIDECAR",
    "REDOC_DIST": "SIDECAR",
    "COMPONENT_SPLIT_REQUEST": True,
    # Tags and operation ids from the resource (mirrors, groups_approve_create), not "v1".
    "SCHEMA_PATH_PREFIX": r"/api/v1",
    "ENUM_NAME_OVERRIDES": {
        "Platform": "mirror.choices.Platform",
        "Channel": "mirror.choices.Channel",
        "Arch": "mirror.choices.Arch",
        "TokenScope": "core.choices.TokenScope",
        "AccountSource": "core.choices.AccountSource",
    },
    # Endpoints authenticate with their own token (fleet.api.agent), outside DRF's authentication classes.
    "APPEND_COMPONENTS": {
        "securitySchemes": {
            "endpointToken": {
                "type": "http",
                "scheme": "bearer",
                "description": "An endpoint's own token (mde_ep_…), returned once by POST /api/v1/enroll.",
            }
        }
    },
}

# --- Static files -------------------------------------------------------------
STATIC_URL = "/static/"
STATIC_ROOT = VAR_DIR / "static"
STORAGES = {
    "default": {"BACKEND": "django.core.files.storage.FileSystemStorage"},
    "staticfiles": {"BACKEND": "whitenoise.storage.CompressedManifestStaticFilesStorage"},
}
if DEBUG:
    STORAGES["staticfiles"] = {"BACKEND": "django.contrib.staticfiles.storage.StaticFilesStorage"}

# English and French (the product's source documentation is French). The language follows the browser
# (Accept-Language, through LocaleMiddleware) unless the signed-in person chose one (core.UserPreference,
# applied by core.middleware.UserLanguageMiddleware). The catalogue is locale/fr/LC_MESSAGES/django.po,
# compiled to django.mo beside it and committed, so a bare machine needs no gettext tools (docs/i18n.md).
LANGUAGE_CODE = "en"
LANGUAGES = [("en", "English"), ("fr", "Français")]
LOCALE_PATHS = [BASE_DIR / "locale"]
# Dates in templates use the named formats ("SHORT_DATETIME_FORMAT"), set per language in portal/formats/.
FORMAT_MODULE_PATH = ["portal.formats"]
TIME_ZONE = env_str("TIME_ZONE") or "UTC"
USE_I18N = True
USE_TZ = True

LOGGING = {
    "version": 1,
    "disable_existing_loggers": False,
    "formatters": {"plain": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"}},
    "handlers": {"console": {"class": "logging.StreamHandler", "formatter": "plain"}},
    "root": {"handlers": ["console"], "level": env_str("LOG_LEVEL") or "INFO"},
    "loggers": {"axes": {"level": "WARNING"}},
}

# How often beat asks a worker to prove it is alive (the dashboard shows the last one).
PORTAL_HEARTBEAT_SECONDS = env_int("PORTAL_HEARTBEAT_SECONDS", 60)
FLEET_PRUNE_REPORTS_SECONDS = env_int("FLEET_PRUNE_REPORTS_SECONDS", 3600)
CELERY_BEAT_SCHEDULE = {
    "portal-heartbeat": {"task": "core.tasks.heartbeat", "schedule": float(PORTAL_HEARTBEAT_SECONDS)},
    "mirror-prune-packages": {"task": "mirror.tasks.prune_packages", "schedule": 6 * 3600.0},
    # Ring delays expire and health gates open as endpoints report: re-check every few minutes.
    "fleet-evaluate-rollouts": {
        "task": "fleet.tasks.evaluate_rollouts",
        "schedule": float(env_int("FLEET_ROLLOUT_CHECK_SECONDS", 300)),
    },
    "fleet-mark-silent": {"task": "fleet.tasks.mark_silent", "schedule": 300.0},
    "fleet-snapshot-compliance": {
        "task": "fleet.tasks.snapshot_compliance",
        "schedule": float(env_int("FLEET_SNAPSHOT_SECONDS", 3600)),
    },
    # Hourly, like the agents' reports: an endpoint holds at most about FLEET_RAW_REPORTS_KEPT + 1 raw reports.
    # Each run prunes the endpoints that reported within twice this period (fleet.services.chores.prune_reports).
    "fleet-prune-reports": {"task": "fleet.tasks.prune_reports", "schedule": float(FLEET_PRUNE_REPORTS_SECONDS)},
    "fleet-prune-changes": {"task": "fleet.tasks.prune_changes", "schedule": 6 * 3600.0},
    "fleet-prune-tallies": {"task": "fleet.tasks.prune_tallies", "schedule": 6 * 3600.0},
    # Alert rules are checked every minute; each message is then its own task (portal.alerts).
    "portal-evaluate-alerts": {
        "task": "portal.tasks.evaluate_alerts",
        "schedule": float(env_int("ALERT_CHECK_SECONDS", 60)),
    },
}

# --- Fleet --------------------------------------------------------------------
FLEET_REPORT_MAX_BYTES = env_int("FLEET_REPORT_MAX_BYTES", 64 * 1024)  # a full `mdatp health` is a few kB
FLEET_REPORT_BURST = env_int("FLEET_REPORT_BURST", 10)  # reports per endpoint per minute; more is a 429
FLEET_ENROLL_BURST = env_int("FLEET_ENROLL_BURST", 300)  # enrollments per secret per minute; more is a 429
FLEET_SILENT_INTERVALS = env_int(
    "FLEET_SILENT_INTERVALS", 3
)  # silent after this many update intervals without a report
FLEET_REPORT_RETENTION_DAYS = env_int("FLEET_REPORT_RETENTION_DAYS", 30)
# History by change (issue 17): the last raw reports per endpoint, and every change record for this many days.
FLEET_RAW_REPORTS_KEPT = env_int("FLEET_RAW_REPORTS_KEPT", 24)
FLEET_CHANGE_RETENTION_DAYS = env_int("FLEET_CHANGE_RETENTION_DAYS", 90)

# --- Mirror -------------------------------------------------------------------
MIRROR_RETRY_ATTEMPTS = env_int("MIRROR_RETRY_ATTEMPTS", 5)
MIRROR_RETRY_BACKOFF = float(env_str("MIRROR_RETRY_BACKOFF") or 2.0)  # seconds, doubled per failure
# Seconds to open a connection to an upstream or its proxy (the upstream's own timeout is for data once connected):
# a host that does not accept within seconds is not there, and such a failure is not retried (mirror.upstream).
MIRROR_CONNECT_TIMEOUT = float(env_str("MIRROR_CONNECT_TIMEOUT") or 5)
# A running sync's worker beats its heartbeat this often (a thread, whatever the sync is doing); one whose heartbeat
# is older than MIRROR_STALE_RUN_SECONDS lost its worker, and the next trigger replaces it (issue 14, item 11).
MIRROR_HEARTBEAT_SECONDS = float(env_str("MIRROR_HEARTBEAT_SECONDS") or 10)
MIRROR_STALE_RUN_SECONDS = env_int("MIRROR_STALE_RUN_SECONDS", 60)
# A queued sync no worker took for this long (its task was lost) is replaced by the next trigger.
MIRROR_QUEUED_RUN_SECONDS = env_int("MIRROR_QUEUED_RUN_SECONDS", 600)
# What checking a zip (download, upload, bundle, tree) may cost, read from its central directory before a byte is
# inflated (mirror.store.check_zip_bounds): a signature package has a few members of signature files that deflate
# little; a crafted 2 MB zip must not keep a web worker inflating gigabytes (issue 14, item 5).
MIRROR_ZIP_MAX_MEMBERS = env_int("MIRROR_ZIP_MAX_MEMBERS", 1000)
MIRROR_ZIP_MAX_INFLATED_BYTES = env_int("MIRROR_ZIP_MAX_INFLATED_BYTES", 8 * 1024**3)
MIRROR_ZIP_MAX_RATIO = env_int("MIRROR_ZIP_MAX_RATIO", 100)
# Behind nginx: package downloads answered with X-Accel-Redirect to this internal location
# (which maps to PORTAL_STORE_ROOT), so nginx sends the bytes. Empty: the portal sends them.
MIRROR_X_ACCEL_PREFIX = (env_str("MIRROR_X_ACCEL_PREFIX") or "").rstrip("/")
# The Ed25519 key that signs the bundles this portal exports (mirror/services/bundles.py): generated on first use,
# mode 600, kept like the secret key. Another portal imports them once an admin trusts its public key.
MIRROR_BUNDLE_KEY_FILE = Path(env_str("PORTAL_BUNDLE_KEY_FILE") or VAR_DIR / "bundle_key.pem")

# --- Metrics (GET /metrics, Prometheus; see portal/metrics.py) ----------------
# Off unless a token or an allow-list is set: the numbers describe the fleet to whoever reads them.
# When both are set, a scrape must come from an allowed address *and* bear the token.
METRICS_TOKEN = env_str("METRICS_TOKEN") or ""  # or METRICS_TOKEN_FILE; sent as "Authorization: Bearer <token>"
# Addresses or CIDRs, compared with REMOTE_ADDR (the client's behind TRUSTED_PROXIES, else the peer's).
METRICS_ALLOWED_IPS = env_networks("METRICS_ALLOWED_IPS")
# gunicorn's workers count reports in files here, which a scrape adds up; `manage.py serve` empties it
# and hands it to the web server as PROMETHEUS_MULTIPROC_DIR (prometheus_client's multiprocess mode).
METRICS_MULTIPROC_DIR = VAR_DIR / "metrics"

# --- Reverse proxy (core/middleware.py) ---------------------------------------
# Addresses or CIDRs of the proxies (nginx) whose X-Real-IP is taken as the client's address, in
# REMOTE_ADDR, for the sign-in lock-out (django-axes reads REMOTE_ADDR: django-ipware is not
# installed), the audit log and METRICS_ALLOWED_IPS. Empty: nobody's, REMOTE_ADDR is the peer's.
TRUSTED_PROXIES = env_networks("TRUSTED_PROXIES")

# --- Outbound policy (core/outbound.py) ---------------------------------------
# Addresses or CIDRs the portal may connect to besides public addresses: upstreams, their proxy, webhooks.
# Empty: public addresses only (no loopback, private, link-local or reserved address), checked after DNS
# resolution on every connection and every redirect. E.g. 10.1.2.3 for an internal proxy, 127.0.0.1 for a
# stand-in on the same host (the tests and `manage.py demo` list theirs here).
OUTBOUND_ALLOWED_NETWORKS = env_networks("OUTBOUND_ALLOWED_NETWORKS")

# --- Alerts and e-mail (portal/alerts.py) -------------------------------------
# Without EMAIL_HOST, mail is written to the worker's console (bin/run's output): a bare machine
# has no mail server, and an alert e-mail must still be visible somewhere.
EMAIL_HOST = env_str("EMAIL_HOST") or ""
EMAIL_BACKEND = env_str("EMAIL_BACKEND") or (
    "django.core.mail.backends.smtp.EmailBackend" if EMAIL_HOST else "django.core.mail.backends.console.EmailBackend"
)
EMAIL_PORT = env_int("EMAIL_PORT", 25)
EMAIL_HOST_USER = env_str("EMAIL_HOST_USER") or ""
EMAIL_HOST_PASSWORD = env_str("EMAIL_HOST_PASSWORD") or ""  # or EMAIL_HOST_PASSWORD_FILE
EMAIL_USE_TLS = env_bool("EMAIL_USE_TLS", False)  # STARTTLS, usually port 587
EMAIL_USE_SSL = env_bool("EMAIL_USE_SSL", False)  # implicit TLS, usually port 465
EMAIL_TIMEOUT = env_int("EMAIL_TIMEOUT", 10)  # seconds: a dead mail server must not hold a worker
DEFAULT_FROM_EMAIL = env_str("DEFAULT_FROM_EMAIL") or f"portal@{_base_host or 'localhost'}"
ALERT_DELIVERY_ATTEMPTS = env_int("ALERT_DELIVERY_ATTEMPTS", 5)  # per message, then it is marked failed
ALERT_RETRY_BACKOFF = float(
    env_str("ALERT_RETRY_BACKOFF") or 30.0
)  # seconds before the 2nd attempt, doubled after each
ALERT_WEBHOOK_TIMEOUT = float(
    env_str("ALERT_WEBHOOK_TIMEOUT") or 5.0
)  # seconds to connect, and between bytes of the answer
