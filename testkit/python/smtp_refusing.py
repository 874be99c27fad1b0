"""An aiosmtpd handler for the tests: a Maildir that refuses some recipients the way real servers do.

Recipients whose local part starts with "refused" get a permanent 550 (the server's final word);
those starting with "later" get a transient 451 (try again later). Everyone else is stored.
"""

from aiosmtpd.handlers import Mailbox


class RefusingMailbox(Mailbox):
    async def handle_RCPT(self, server, session, envelope, address, rcpt_options):
        local = address.split("@", 1)[0]
        if local.startswith("refused"):
            return "550 5.1.1 no mailbox by that name here"
        if local.startswith("later"):
            return "451 4.3.0 mailbox busy, try again later"
        envelope.rcpt_tos.append(address)
        return "250 OK"
