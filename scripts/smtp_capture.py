#!/usr/bin/env python3
"""A loopback SMTP server for the alert tests: every message is saved to a Maildir.

Each accepted message lands in MAILDIR/new/ (written to tmp/ first, then renamed, so a
reader never sees half a file) with X-Envelope-From / X-Envelope-To prepended, and one JSON
line per message is appended to MAILDIR/messages.jsonl: key, mail_from, rcpt_tos, auth_user,
tls (whether the message came over an encrypted connection), and the message as a reader sees
it (headers, decoded text and HTML parts, attachments).

--auth USER:PASSWORD makes AUTH mandatory and accepts only that pair; without it any client
is accepted without AUTH. --reject-rcpt ADDRESS answers 550 for that recipient, so tests can
check how a permanent refusal is reported. --tempfail N answers 451 to the first N messages.
--tls-cert CERT --tls-key KEY (PEM files) offer STARTTLS and require it before any mail; with
--implicit-tls as well, the connection is TLS from the first byte instead ("SMTPS").
The line "listening on HOST:PORT" on stdout says the server is ready.
"""
import argparse
import base64
import email
import email.policy
import json
import mailbox
import os
import signal
import ssl

from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult


class Authenticator:
    def __init__(self, user, password):
        self.user = user.encode()
        self.password = password.encode()

    def __call__(self, server, session, envelope, mechanism, auth_data):
        ok = getattr(auth_data, "login", None) == self.user and \
            getattr(auth_data, "password", None) == self.password
        return AuthResult(success=ok, handled=False, auth_data=auth_data)


def parsed(raw):
    """The message decoded the way a mail client shows it."""
    message = email.message_from_bytes(raw, policy=email.policy.default)
    text = message.get_body(("plain",))
    html = message.get_body(("html",))
    attachments = []
    for part in message.iter_attachments():
        content = part.get_payload(decode=True) or b""
        try:
            content = content.decode("utf-8")
        except UnicodeDecodeError:
            content = "base64:" + base64.b64encode(content).decode()
        attachments.append({"name": part.get_filename(), "content_type": part.get_content_type(),
                            "content": content})
    return {
        "headers": {k.lower(): str(v) for k, v in message.items()},
        "text": text.get_content() if text is not None else None,
        "html": html.get_content() if html is not None else None,
        "attachments": attachments,
    }


class MaildirHandler:
    def __init__(self, maildir, reject_rcpt, tempfail):
        self.maildir = mailbox.Maildir(maildir, create=True)
        self.jsonl = os.path.join(maildir, "messages.jsonl")
        self.reject_rcpt = reject_rcpt
        self.tempfail = tempfail

    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        if self.reject_rcpt and address == self.reject_rcpt:
            return "550 5.1.1 No such user here"
        envelope.rcpt_tos.append(address)
        return "250 OK"

    async def handle_DATA(self, server, session, envelope):
        if self.tempfail > 0:
            self.tempfail -= 1
            return "451 4.3.0 Try again later"
        raw = envelope.original_content or envelope.content
        header = (
            f"X-Envelope-From: {envelope.mail_from}\r\n"
            f"X-Envelope-To: {', '.join(envelope.rcpt_tos)}\r\n"
        ).encode()
        key = self.maildir.add(header + raw)
        auth_user = None
        if session.authenticated and session.auth_data is not None:
            auth_user = session.auth_data.login.decode()
        with open(self.jsonl, "a") as f:
            f.write(json.dumps({
                "key": key,
                "mail_from": envelope.mail_from,
                "rcpt_tos": envelope.rcpt_tos,
                "auth_user": auth_user,
                "tls": server.transport.get_extra_info("ssl_object") is not None,
                **parsed(raw),
            }) + "\n")
        return "250 Message accepted for delivery"


def main():
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT, signal.SIGTERM})
    parser = argparse.ArgumentParser()
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--maildir", required=True)
    parser.add_argument("--auth", help="USER:PASSWORD; AUTH is then required")
    parser.add_argument("--reject-rcpt")
    parser.add_argument("--tempfail", type=int, default=0)
    parser.add_argument("--tls-cert")
    parser.add_argument("--tls-key")
    parser.add_argument("--implicit-tls", action="store_true")
    args = parser.parse_args()
    if bool(args.tls_cert) != bool(args.tls_key) or (args.implicit_tls and not args.tls_cert):
        parser.error("--tls-cert and --tls-key go together, and --implicit-tls needs them")
    handler = MaildirHandler(args.maildir, args.reject_rcpt, args.tempfail)
    options = {}
    if args.auth:
        user, _, password = args.auth.partition(":")
        options = dict(authenticator=Authenticator(user, password), auth_required=True,
                       auth_require_tls=False)
    if args.tls_cert:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(args.tls_cert, args.tls_key)
        if args.implicit_tls:
            options["ssl_context"] = context
        else:
            options.update(tls_context=context, require_starttls=True)
    controller = Controller(handler, hostname=args.host, port=args.port, **options)
    controller.start()
    print(f"listening on {args.host}:{args.port}", flush=True)
    signal.sigwait({signal.SIGINT, signal.SIGTERM})
    controller.stop()


if __name__ == "__main__":
    main()
