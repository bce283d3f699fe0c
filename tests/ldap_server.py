"""A real OpenLDAP server (Debian's slapd) for the LDAP sign-in tests.

``LdapServer`` writes a slapd.conf and a data folder in a temporary directory, seeds them with ``SEED`` (users in
ou=people, groupOfNames groups in ou=groups, the memberof overlay filling each user's memberOf as Active Directory
does) and serves plain LDAP (StartTLS offered) and LDAPS on two free ports of 127.0.0.1, as the current user. Its
certificate is signed by a test CA made here with the ``cryptography`` package (``CertificateAuthority``); ``tls=False`` gives a
server that offers no TLS at all, which must make a StartTLS sign-in fail.

Changes during a test go through the real command-line tools (``ldapmodify``), as an administrator's would.
"""

import datetime
import ipaddress
import os
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from tests.processes import free_port

SUFFIX = "dc=example,dc=org"
ROOT_DN = f"cn=admin,{SUFFIX}"
ROOT_PASSWORD = "root secret"
SERVICE_DN = f"cn=portal,ou=services,{SUFFIX}"
SERVICE_PASSWORD = "service secret"
PASSWORD = "directory password"  # every seeded person's
OPERATORS = f"cn=ops,ou=groups,{SUFFIX}"
ADMINS = f"cn=soc-admins,ou=groups,{SUFFIX}"
MARKETING = f"cn=marketing,ou=groups,{SUFFIX}"

PEOPLE = {
    # uid: groups
    "ana": [OPERATORS],
    "bob": [MARKETING],
    "carl": [ADMINS, OPERATORS],
    "dana": [OPERATORS],
}

SEARCH_PATH = f"{os.environ.get('PATH', '')}:/usr/sbin:/sbin"


def slapd_path() -> str | None:
    return shutil.which("slapd", path=SEARCH_PATH)


def _seed_ldif() -> str:
    entries = [
        f"dn: {SUFFIX}\nobjectClass: dcObject\nobjectClass: organization\ndc: example\no: Example\n",
        f"dn: ou=people,{SUFFIX}\nobjectClass: organizationalUnit\nou: people\n",
        f"dn: ou=groups,{SUFFIX}\nobjectClass: organizationalUnit\nou: groups\n",
        f"dn: ou=services,{SUFFIX}\nobjectClass: organizationalUnit\nou: services\n",
        f"dn: {SERVICE_DN}\nobjectClass: organizationalRole\nobjectClass: simpleSecurityObject\ncn: portal\n"
        f"userPassword: {SERVICE_PASSWORD}\n",
    ]
    for uid in PEOPLE:
        entries.append(
            f"dn: uid={uid},ou=people,{SUFFIX}\nobjectClass: inetOrgPerson\nuid: {uid}\ncn: {uid.title()}\n"
            f"sn: {uid.title()}\nmail: {uid}@example.org\nuserPassword: {PASSWORD}\n"
        )
    for group in (OPERATORS, ADMINS, MARKETING):
        members = [f"uid={uid},ou=people,{SUFFIX}" for uid, groups in PEOPLE.items() if group in groups]
        name = group.split(",")[0].split("=")[1]
        entries.append(
            f"dn: {group}\nobjectClass: groupOfNames\ncn: {name}\n" + "".join(f"member: {dn}\n" for dn in members)
        )
    return "\n".join(entries)


class CertificateAuthority:
    """A certificate authority of the test's own, and server certificates it signs (for localhost and 127.0.0.1)."""

    def __init__(self, folder: Path, name: str = "Portal test CA"):
        from cryptography import x509
        from cryptography.hazmat.primitives import hashes, serialization
        from cryptography.hazmat.primitives.asymmetric import ec
        from cryptography.x509.oid import NameOID

        self._x509, self._hashes, self._serialization, self._ec, self._oid = x509, hashes, serialization, ec, NameOID
        self.folder = folder
        self.key = ec.generate_private_key(ec.SECP256R1())
        subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
        now = datetime.datetime.now(datetime.UTC)
        self.cert = (
            x509.CertificateBuilder()
            .subject_name(subject)
            .issuer_name(subject)
            .public_key(self.key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
            .add_extension(
                x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
            )  # keyCertSign, cRLSign
            .sign(self.key, hashes.SHA256())
        )
        self.cert_file = folder / f"{name.replace(' ', '-')}.pem"
        self.cert_file.write_bytes(self.cert.public_bytes(serialization.Encoding.PEM))

    def issue_server_certificate(self, stem: str = "server") -> tuple[Path, Path]:
        """(certificate file, key file) for a server at localhost / 127.0.0.1."""
        x509, hashes, serialization = self._x509, self._hashes, self._serialization
        key = self._ec.generate_private_key(self._ec.SECP256R1())
        now = datetime.datetime.now(datetime.UTC)
        cert = (
            x509.CertificateBuilder()
            .subject_name(x509.Name([x509.NameAttribute(self._oid.COMMON_NAME, "localhost")]))
            .issuer_name(self.cert.subject)
            .public_key(key.public_key())
            .serial_number(x509.random_serial_number())
            .not_valid_before(now - datetime.timedelta(minutes=5))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(
                x509.SubjectAlternativeName(
                    [x509.DNSName("localhost"), x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]
                ),
                critical=False,
            )
            .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
            .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
            .sign(self.key, hashes.SHA256())
        )
        cert_file, key_file = self.folder / f"{stem}.pem", self.folder / f"{stem}.key"
        cert_file.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
        key_file.write_bytes(
            key.private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
        )
        key_file.chmod(0o600)
        return cert_file, key_file


class LdapServer:
    """slapd on 127.0.0.1: ``url`` (plain, StartTLS offered when ``tls``) and ``ldaps_url``; ``ca_file`` signs its
    certificate. Use as a context manager: stopped, and its folder removed, at the end."""

    def __init__(self, tls: bool = True):
        self.tls = tls
        self.folder = Path(tempfile.mkdtemp(prefix="portal-slapd-"))
        self.port, self.ldaps_port = free_port(), free_port()
        self.url = f"ldap://127.0.0.1:{self.port}"
        self.ldaps_url = f"ldaps://127.0.0.1:{self.ldaps_port}"
        self.process = None
        self.ca = CertificateAuthority(self.folder) if tls else None
        self.ca_file = str(self.ca.cert_file) if tls else None

    def _config(self) -> Path:
        data = self.folder / "data"
        data.mkdir(mode=0o700)
        tls_lines = ""
        if self.tls:
            cert_file, key_file = self.ca.issue_server_certificate()
            tls_lines = (
                f"TLSCACertificateFile {self.ca.cert_file}\nTLSCertificateFile {cert_file}\n"
                f"TLSCertificateKeyFile {key_file}\n"
            )
        config = self.folder / "slapd.conf"
        config.write_text(
            "include /etc/ldap/schema/core.schema\n"
            "include /etc/ldap/schema/cosine.schema\n"
            "include /etc/ldap/schema/inetorgperson.schema\n"
            "include /etc/ldap/schema/nis.schema\n"
            "modulepath /usr/lib/ldap\n"
            "moduleload back_mdb\n"
            "moduleload memberof\n"
            f"pidfile {self.folder / 'slapd.pid'}\n"
            f"{tls_lines}"
            # Anyone may bind (as themselves); only the service account and the admin read the tree.
            "access to attrs=userPassword by anonymous auth by self write by * none\n"
            f'access to * by dn.exact="{SERVICE_DN}" read by self read by * none\n'
            "database mdb\n"
            f'suffix "{SUFFIX}"\n'
            f'rootdn "{ROOT_DN}"\n'
            f'rootpw "{ROOT_PASSWORD}"\n'
            f"directory {data}\n"
            "maxsize 10485760\n"
            "overlay memberof\n"
            "memberof-refint TRUE\n"
        )
        return config

    def start(self) -> "LdapServer":
        slapd = slapd_path()
        config = self._config()
        listen = f"{self.url}/ {self.ldaps_url}/" if self.tls else f"{self.url}/"
        self.log = open(self.folder / "slapd.log", "wb")
        # -d 0: in the foreground (a child the test can stop), logging nothing but errors.
        self.process = subprocess.Popen(
            [slapd, "-f", str(config), "-h", listen, "-d", "0"], stdout=self.log, stderr=subprocess.STDOUT
        )
        self._wait_until_ready()
        # Seeded over the protocol (not slapadd, which bypasses overlays) so that memberof fills each memberOf.
        self.ldapmodify(add=_seed_ldif())
        return self

    def _wait_until_ready(self, timeout: float = 15) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise RuntimeError(f"slapd exited with {self.process.returncode}: {self.read_log()}")
            probe = subprocess.run(
                ["ldapwhoami", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD],
                capture_output=True,
                env={**os.environ, "PATH": SEARCH_PATH},
            )
            if probe.returncode == 0:
                return
            time.sleep(0.1)
        raise RuntimeError(f"slapd did not answer on {self.url} within {timeout}s: {self.read_log()}")

    def read_log(self) -> str:
        return (self.folder / "slapd.log").read_text(errors="replace")

    def ldapmodify(self, ldif: str = "", add: str = "") -> None:
        """Apply ``ldif`` (changetype records) as the directory's administrator, with OpenLDAP's ldapmodify;
        ``add`` holds plain entries to add (ldapmodify -a)."""
        for text, extra in ((ldif, []), (add, ["-a"])):
            if not text.strip():
                continue
            subprocess.run(
                ["ldapmodify", "-x", "-H", self.url, "-D", ROOT_DN, "-w", ROOT_PASSWORD, *extra],
                input=text.encode(),
                check=True,
                capture_output=True,
                env={**os.environ, "PATH": SEARCH_PATH},
            )

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        if getattr(self, "log", None):
            self.log.close()
        shutil.rmtree(self.folder, ignore_errors=True)

    def __enter__(self) -> "LdapServer":
        try:
            return self.start()
        except BaseException:
            self.stop()
            raise

    def __exit__(self, *exc) -> None:
        self.stop()
