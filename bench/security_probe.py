"""An attacker's tour of a running RLHF Studio (issue 9): what they try, and whether it held.

    .venv/bin/python -m bench.security_probe --base-url http://127.0.0.1:8765 \\
        --attacker mallory:PASSWORD --victim alice:PASSWORD

It starts nothing: point it at a server on a throwaway database. Each user is an admin of
a project of their own (the first project only they can see, or --attacker-project and
--victim-project); the victim's should hold a round and open tasks (`start_round`,
`import_responses`), so that there are ids to steal. The probe writes into the attacker's
project (prompts, a demonstration, settings), leases a task and asks the playground as the
victim, and ends by brute-forcing the victim's login and random API tokens, which locks
this address out for the cool-off time (`manage.py axes_reset`, and a minute for tokens).

Categories: account takeover (the members endpoint, look-alike usernames, the Django
admin), IDOR (every route of /api/schema/ with the victim's slug and ids), XSS (payloads
stored in the attacker's project, then every page that shows them), path specs
(base_model), hostile JSON (NUL, lone surrogates, deep nesting, NaN, 1e400, huge integers,
bad UTF-8) and brute force. Prints attempts made and attempts that held per category,
then every attempt that did not hold; exits 1 if any did not.
"""

import argparse
import secrets
import sys
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

XSS_PAYLOADS = [
    '<script>alert("probe-1")</script>',
    '"><img src=x onerror=alert("probe-2")>',
    '</script><script>alert("probe-3")</script>',
    '<svg onload=alert("probe-4")>',
]
XSS_MARKDOWN = '[click](javascript:alert("probe-5"))'
XSS_FLAG = "<img src=x onerror=alert(6)>"  # flags are short
PATH_SPECS = [
    "/etc/passwd",
    "/",
    "../../../../etc",
    "~/.ssh",
    "file:///etc/passwd",
    "http://127.0.0.1:1/model",
    "HuggingFaceTB/SmolLM2-135M-Instruct",
    "var/models",
    "version:999999",
    "default/../../etc",
    "tiny\x00",
]
DEEP = 100_000
HOSTILE_BODIES: dict[str, bytes] = {
    "NUL in a string": b'{"name": "a\\u0000b"}',
    "lone surrogate": b'{"name": "\\ud800"}',
    "deep nesting": b'{"training_config": ' + b'{"a":' * DEEP + b"1" + b"}" * DEEP + b"}",
    "deep list": b'{"flag_vocabulary": ' + b"[" * DEEP + b"]" * DEEP + b"}",
    "NaN": b'{"temperature": NaN}',
    "1e400": b'{"temperature": 1e400}',
    "5000-digit integer": b'{"max_new_tokens": 1' + b"0" * 5000 + b"}",
    "bad UTF-8": b'{"name": "\xff\xfe"}',
    "truncated": b'{"name": ',
    "a list, not an object": b"[1, 2, 3]",
}


@dataclass
class Attempt:
    category: str
    what: str
    held: bool
    detail: str = ""


@dataclass
class Probe:
    base: str
    attempts: list[Attempt] = field(default_factory=list)

    def record(self, category: str, what: str, held: bool, detail: str = "") -> None:
        self.attempts.append(Attempt(category, what, held, detail))


class User:
    """A browser session of one user: the login form, then the API with its CSRF token."""

    def __init__(self, base: str, credentials: str) -> None:
        self.base = base
        self.username, _, self.password = credentials.partition(":")
        self.http = requests.Session()
        if login(self.http, base, self.username, self.password) != "in":
            sys.exit(f"cannot log in as {self.username}")

    def api(self, method: str, path: str, **kwargs: Any) -> requests.Response:
        headers = {"X-CSRFToken": self.http.cookies.get("csrftoken") or "", "Referer": self.base}
        headers.update(kwargs.pop("headers", {}))
        return self.http.request(method, self.base + path, headers=headers, timeout=60, **kwargs)

    def slugs(self) -> set[str]:
        return {p["slug"] for p in self.api("GET", "/api/v1/projects/").json()}


def login(http: requests.Session, base: str, username: str, password: str) -> str:
    """`in`, `refused` (wrong password) or `locked` (429) for one try of the login form."""
    http.get(f"{base}/accounts/login/", timeout=30)
    response = http.post(
        f"{base}/accounts/login/",
        data={
            "username": username,
            "password": password,
            "csrfmiddlewaretoken": http.cookies.get("csrftoken", ""),
        },
        headers={"Referer": f"{base}/accounts/login/"},
        allow_redirects=False,
        timeout=30,
    )
    if response.status_code == 429:
        return "locked"
    return "in" if response.status_code == 302 and "sessionid" in http.cookies else "refused"


def can_log_in(base: str, username: str, password: str) -> bool:
    return login(requests.Session(), base, username, password) == "in"


def victim_ids(victim: User, slug: str) -> dict[str, list[Any]]:
    """The victim's slug and the ids its URLs take (leases a task, asks the playground)."""
    ids: dict[str, list[Any]] = {"slug": [slug]}
    rounds = victim.api("GET", f"/api/v1/projects/{slug}/rounds/")
    ids["round_id"] = [r["id"] for r in rounds.json()] if rounds.ok else []
    runs = victim.api("GET", f"/api/v1/projects/{slug}/runs/")
    ids["run_id"] = [r["id"] for r in runs.json()] if runs.ok else []
    task = victim.api("GET", f"/api/v1/projects/{slug}/tasks/next/")
    ids["task_id"] = [task.json()["id"]] if task.status_code == 200 else []
    reply = victim.api("POST", f"/api/v1/projects/{slug}/playground/", json={"prompt": "Hi."})
    ids["reply_id"] = [reply.json()["id"]] if reply.status_code == 202 else []
    return ids


def probe_idor(probe: Probe, attacker: User, victim: User, slug: str) -> None:
    """Every operation of the schema with the victim's values: 404 (or 403), nothing else."""
    schema = attacker.api(
        "GET", "/api/schema/", headers={"Accept": "application/vnd.oai.openapi+json"}
    ).json()
    ids = victim_ids(victim, slug)
    bodies = {"members": {"username": attacker.username, "role": "admin"}}
    for template, operations in schema["paths"].items():
        names = [part[1:-1] for part in template.split("/") if part.startswith("{")]
        if not names:
            continue
        for method in operations:
            if any(not ids.get(name) for name in names):
                probe.record("IDOR", f"{method.upper()} {template}", False, "no victim id")
                continue
            path = template
            for name in names:
                path = path.replace("{" + name + "}", str(ids[name][0]))
            body = next((b for key, b in bodies.items() if template.endswith(f"/{key}/")), {})
            kwargs = {"json": body} if method in ("post", "patch", "put") else {}
            response = attacker.api(method.upper(), path, **kwargs)
            held = response.status_code in (403, 404)
            probe.record("IDOR", f"{method.upper()} {path}", held, str(response.status_code))
    listed = slug in attacker.slugs()
    probe.record("IDOR", "GET /api/v1/projects/ lists the victim's project", not listed)


def probe_takeover(probe: Probe, attacker: User, victim: User, own: str) -> None:
    members = f"/api/v1/projects/{own}/members/"
    new_password = "probe-" + secrets.token_urlsafe(12)
    answer = attacker.api(
        "POST",
        members,
        json={"username": victim.username, "role": "labeler", "password": new_password},
    )
    taken = can_log_in(probe.base, victim.username, new_password)
    probe.record(
        "account takeover",
        "set the victim's password by adding them",
        not taken,
        str(answer.status_code),
    )
    attacker.api("POST", members, json={"username": victim.username, "role": "admin"})
    kept = can_log_in(probe.base, victim.username, victim.password)
    probe.record("account takeover", "victim's own password still works after that", kept)
    for lookalike in (victim.username.upper(), f" {victim.username}", f"{victim.username}\u200b"):
        answer = attacker.api(
            "POST", members, json={"username": lookalike, "role": "admin", "password": new_password}
        )
        stolen = False
        if answer.status_code == 201:
            other = requests.Session()
            if login(other, probe.base, lookalike, new_password) == "in":
                mine = {p["slug"] for p in other.get(f"{probe.base}/api/v1/projects/").json()}
                stolen = bool(mine & victim.slugs() - {own})
        probe.record(
            "account takeover",
            f"look-alike user {lookalike!r}",
            not stolen,
            str(answer.status_code),
        )
    admin = attacker.http.get(f"{probe.base}/admin/", allow_redirects=False, timeout=30)
    probe.record(
        "account takeover",
        "Django admin as a project admin",
        admin.status_code != 200,
        str(admin.status_code),
    )


def probe_xss(probe: Probe, attacker: User, own: str) -> None:
    """Payloads stored through the API (what was refused is listed), then every page."""
    project = f"/api/v1/projects/{own}/"
    guidelines = " ".join(XSS_PAYLOADS) + "\n\n" + XSS_MARKDOWN
    writes = {
        "name+guidelines": {"name": XSS_PAYLOADS[0], "guidelines": guidelines},
        "flags": {"flag_vocabulary": [XSS_FLAG]},
    }
    statuses = {
        what: attacker.api("PATCH", project, json=body).status_code for what, body in writes.items()
    }
    statuses["prompts"] = attacker.api(
        "POST", f"{project}prompts/import", json=[{"prompt": p} for p in XSS_PAYLOADS]
    ).status_code
    statuses["demonstration"] = attacker.api(
        "POST",
        f"{project}demonstrations/",
        json={"prompt": XSS_PAYLOADS[1], "response": XSS_PAYLOADS[2]},
    ).status_code
    refused = [what for what, status in statuses.items() if status >= 400]
    pages = [
        "/projects/",
        f"/projects/{own}/label/",
        f"/projects/{own}/demonstrate/",
        f"/projects/{own}/rounds/",
        f"/projects/{own}/playground/",
    ]
    for page in pages:
        response = attacker.http.get(probe.base + page, timeout=30)
        policy = response.headers.get("Content-Security-Policy", "")
        raw = [p for p in [*XSS_PAYLOADS, XSS_FLAG] if p in response.text]
        if 'href="javascript:' in response.text.lower():
            raw.append(XSS_MARKDOWN)
        inline_ok = "'unsafe-inline'" in policy.split("script-src")[-1].split(";")[0]
        held = response.status_code == 200 and not raw and "script-src" in policy and not inline_ok
        detail = f"{response.status_code}" + (f"; unescaped: {raw}" if raw else "")
        detail += "" if policy else "; no CSP"
        detail += f"; refused to store: {refused}" if refused else ""
        probe.record("XSS", f"GET {page}", held, detail)


def probe_path_specs(probe: Probe, attacker: User, own: str) -> None:
    for spec in PATH_SPECS:
        response = attacker.api("PATCH", f"/api/v1/projects/{own}/", json={"base_model": spec})
        probe.record(
            "path spec",
            f"base_model={spec!r}",
            response.status_code == 400,
            f"{response.status_code} {response.text[:80]}",
        )
    for where in ("sft", "rm", "ppo"):
        config = {where: {"base_model": "/etc", "init_from": "/etc", "output_dir": "/tmp/x"}}
        response = attacker.api(
            "PATCH", f"/api/v1/projects/{own}/", json={"training_config": config}
        )
        probe.record(
            "path spec",
            f"training_config.{where} paths",
            response.status_code == 400,
            f"{response.status_code} {response.text[:80]}",
        )


def probe_hostile_json(probe: Probe, attacker: User, own: str) -> None:
    targets = [
        ("PATCH", f"/api/v1/projects/{own}/"),
        ("POST", f"/api/v1/projects/{own}/prompts/import"),
        ("POST", f"/api/v1/projects/{own}/demonstrations/"),
    ]
    for name, body in HOSTILE_BODIES.items():
        for method, path in targets:
            response = attacker.api(
                method, path, data=body, headers={"Content-Type": "application/json"}
            )
            probe.record(
                "hostile JSON",
                f"{name} -> {method} {path}",
                400 <= response.status_code < 500,
                str(response.status_code),
            )


def probe_brute_force(probe: Probe, victim: User, tries: int) -> None:
    http = requests.Session()
    answers = [login(http, probe.base, victim.username, f"guess-{i}") for i in range(tries)]
    locked = "locked" in answers
    probe.record(
        "brute force",
        f"{tries} wrong passwords for the victim's login",
        locked,
        f"first lockout at try {answers.index('locked') + 1}" if locked else "no 429",
    )
    still = can_log_in(probe.base, victim.username, victim.password)
    probe.record("brute force", "the right password while locked out", not still)
    statuses = []
    for _ in range(tries * 4):
        token = secrets.token_hex(20)
        response = requests.get(
            f"{probe.base}/api/v1/projects/",
            headers={"Authorization": f"Token {token}"},
            timeout=30,
        )
        statuses.append(response.status_code)
    probe.record(
        "brute force",
        f"{len(statuses)} random API tokens",
        429 in statuses,
        f"first 429 at try {statuses.index(429) + 1}" if 429 in statuses else "no 429",
    )


def _only_project(user: User, other: User) -> str:
    mine = sorted(user.slugs() - other.slugs())
    if not mine:
        # A second run: the first one made the victim a member of the attacker's project.
        sys.exit(
            f"{user.username} has no project of their own: pass --attacker-project and "
            "--victim-project"
        )
    return mine[0]


def print_table(attempts: list[Attempt], *, verbose: bool = False) -> None:
    categories: dict[str, list[Attempt]] = {}
    for attempt in attempts:
        categories.setdefault(attempt.category, []).append(attempt)
    print(f"{'category':<18} {'tried':>5} {'held':>5}")
    for category, rows in categories.items():
        print(f"{category:<18} {len(rows):>5} {sum(a.held for a in rows):>5}")
    if verbose:
        print()
        for attempt in attempts:
            mark = "held" if attempt.held else "FAIL"
            print(f"  {mark} [{attempt.category}] {attempt.what}: {attempt.detail}")
    failed = [a for a in attempts if not a.held]
    if failed:
        print("\nDid not hold:")
        for attempt in failed:
            print(f"  [{attempt.category}] {attempt.what}: {attempt.detail}")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--base-url", default="http://127.0.0.1:8765")
    parser.add_argument("--attacker", required=True, help="USERNAME:PASSWORD")
    parser.add_argument("--victim", required=True, help="USERNAME:PASSWORD")
    parser.add_argument("--attacker-project", help="a project the attacker administers")
    parser.add_argument("--victim-project", help="a project only the victim belongs to")
    parser.add_argument("--tries", type=int, default=10, help="login guesses (tokens: 4x)")
    parser.add_argument("-v", "--verbose", action="store_true", help="list every attempt")
    args = parser.parse_args(argv)
    base = args.base_url.rstrip("/")
    attacker, victim = User(base, args.attacker), User(base, args.victim)
    own = args.attacker_project or _only_project(attacker, victim)
    target = args.victim_project or _only_project(victim, attacker)
    probe = Probe(base)
    steps: list[Callable[[], None]] = [
        lambda: probe_takeover(probe, attacker, victim, own),
        lambda: probe_idor(probe, attacker, victim, target),
        lambda: probe_xss(probe, attacker, own),
        lambda: probe_path_specs(probe, attacker, own),
        lambda: probe_hostile_json(probe, attacker, own),
        lambda: probe_brute_force(probe, victim, args.tries),
    ]
    for step in steps:
        step()
    print_table(probe.attempts, verbose=args.verbose)
    return 0 if all(a.held for a in probe.attempts) else 1


if __name__ == "__main__":
    raise SystemExit(main())
