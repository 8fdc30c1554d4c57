"""The table of diagnostic-text patterns → reason category.

Remote servers explain a refusal in free text ("550 5.1.1 <a@b>: Recipient address rejected:
User unknown in local recipient table"), and the text is often more precise than the code
that goes with it (``5.0.0``, ``5.5.0``, ``5.7.1``, a bare ``550``). The patterns below are
the phrases mail systems actually use, grouped by meaning and cut into five tiers; the
first tier with a match decides (see :func:`.classify.locate`):

1. **the recipient's state** — moved, mailbox full, message too big for it, account
   disabled, no such user, no such domain (and the sender's address refused, which
   resembles them): the most specific and most useful; table order decides inside the tier;
2. **the receiver's judgement** of the message or of the sender — virus, malformed message
   (content_rejected), spam (spam_blocked: the *message* was judged to be spam), the
   sender's authentication (SPF, DKIM, DMARC, reverse DNS) and standing (block lists, IP
   reputation, dynamic ranges) (policy_blocked: *who sends* is refused): the phrase that comes first in the text
   decides, because servers state the reason and then add advice ("SPF check failed ... to
   protect our users from spam");
3. **other policies** — rate limits, relay, the sender refused, permissions, and the bare
   words "policy", "denied", "blocked" (table order), used only when no specific judgement
   was found;
4. **time and transport** — expired after retries, connection failures, loops, DNS;
5. **weak catch-alls** — "address rejected", "content rejected", system errors.

Each entry's name is what the classifier reports as the rule (``diagnostic pattern 'user
unknown'``). Patterns are matched against the whitespace-collapsed, lowercased text.
"""

from __future__ import annotations

import re

_RECIPIENT, _JUDGEMENT, _POLICY, _TRANSPORT, _WEAK = 1, 2, 3, 4, 5

# (tier, reason, name, regular expression)
_TABLE: list[tuple[int, str, str, str]] = [
    # -- recipient state: has_moved -------------------------------------------------------
    (1, "has_moved", "no longer on server", r"no longer on (?:this |the )?(?:server|system)"),
    (
        1,
        "has_moved",
        "address has moved",
        r"(?:user|recipient|address|mailbox) has (?:moved|changed)",
    ),
    (1, "has_moved", "not our user", r"\bnot our (?:user|customer)s?\b|user not local"),
    # -- mailbox_full -----------------------------------------------------------------------
    (
        1,
        "mailbox_full",
        "mailbox full",
        r"\b(?:mail ?box|in ?box|mail ?folder|mail ?drop|folder|account|storage|disk space|user)"
        r"(?:'s)? (?:is |was |are )?(?:currently |now )?(?:full|over ?quota|out of (?:storage|"
        r"space)|overflow)",
    ),
    (
        1,
        "mailbox_full",
        "over quota",
        r"\bover ?quota\b|\bquota (?:exceeded|exceed|full|limit)|exceed(?:s|ed|ing)? (?:his |"
        r"her |their |the |its |your )?(?:storage |mailbox |disk )?quota|storage quota|"
        r"disk quota|postfach (?:ist )?voll|bo[iî]te (?:aux lettres )?(?:est )?pleine|"
        r"casella (?:di posta )?piena|buz[oó]n (?:est[aá] )?lleno",
    ),
    (
        1,
        "mailbox_full",
        "out of storage",
        r"out of (?:storage|disk) space|not enough (?:storage|space) (?:in|for) (?:the |this )?"
        r"(?:mailbox|user)|mailbox (?:size )?(?:limit|maximum)|too many messages in (?:the |"
        r"this )?(?:mailbox|folder)",
    ),
    # -- message_too_big --------------------------------------------------------------------
    (
        1,
        "message_too_big",
        "message too big",
        r"(?:message|mail|e-?mail) (?:size |is |was )*too (?:big|large|long)|\btoo large\b|"
        r"size (?:exceeds|is over)|exceeds? (?:the )?(?:fixed |local |maximum |max\.? )*"
        r"(?:message |allowed )?(?:size|length)|message length exceeds|size limit",
    ),
    # -- suspended --------------------------------------------------------------------------
    (
        1,
        "suspended",
        "account disabled",
        r"(?:account|mailbox|user|recipient)s?(?:\(s\))?(?:(?: \S+){0,6}? (?:has been |have "
        r"been |is |was |are |is currently |temporarily )+| )(?:disabled|suspended|deactivated|"
        r"de-activated|inactive|locked|frozen|closed|discontinued|terminated)|account (?:has "
        r"been |is |was )?(?:blocked|expired)",
    ),
    (
        1,
        "suspended",
        "disabled recipient",
        r"(?:disabled|suspended|inactive|deactivated|frozen) (?:recipient|user|account|"
        r"mailbox|address)|compte du destinataire est bloque|(?:user|account|mailbox|"
        r"recipient)\S*(?: \S+)? temporar(?:il)?y (?:locked|disabled|suspended|blocked)",
    ),
    # -- the sender's address refused (before the recipient patterns it resembles) ----------
    (
        1,
        "policy_blocked",
        "sender refused",
        r"sender address rejected|sender (?:domain|address) (?:not found|unknown|does not "
        r"exist|is invalid)|(?:helo|ehlo) command rejected|client host rejected",
    ),
    # -- user_unknown -----------------------------------------------------------------------
    (
        1,
        "user_unknown",
        "recipient access denied (directory)",
        r"recipient address rejected: access denied",
    ),
    (
        1,
        "user_unknown",
        "user unknown",
        r"\b(?:user|recipient|mailbox|addressee|address|alias|account|local ?part|e-?mail "
        r"address)(?: name)? (?:is )?(?:unknown|not known)\b",
    ),
    (
        1,
        "user_unknown",
        "unknown user",
        r"\bunknown (?:or illegal )?(?:user|recipient|mailbox|local[- ]?part|address|account|"
        r"alias|e-?mail)",
    ),
    (
        1,
        "user_unknown",
        "no such user",
        r"\bno such (?:user|mailbox|recipient|address|account|local user|person|e-?mail)",
    ),
    (
        1,
        "user_unknown",
        "user does not exist",
        r"(?:user|recipient|mailbox|address|account|e-?mail|inbox|alias)\S*(?: \S+){0,5} "
        r"(?:does not|doesn't|did not|does no longer|no longer) exists?",
    ),
    (
        1,
        "user_unknown",
        "user not found",
        r"(?:user|recipient|mailbox|address|account|alias)\S* (?:was |is )?not (?:found|"
        r"listed|valid)|recipnotfound|recipientnotfound|(?:could|can)n[o']?t be found|"
        r"(?:could|can) not be found|wasn't found|not found in (?:the )?directory",
    ),
    (
        1,
        "user_unknown",
        "invalid recipient",
        r"\binvalid (?:recipient|mailbox|user|address|e-?mail address|destination)|"
        r"(?:recipient|address|mailbox) (?:is )?invalid|destinataire invalide|"
        r"bad (?:recipient|destination mailbox)",
    ),
    (
        1,
        "user_unknown",
        "mailbox unavailable",
        r"mailbox (?:is )?(?:unavailable|not available|not found)|mailbox name not allowed",
    ),
    (
        1,
        "user_unknown",
        "no mailbox here",
        r"no (?:mailbox|account|user) (?:here|by that name)|not a (?:valid|known) (?:user|"
        r"mailbox|recipient)|(?:doesn't|does not) have an? (?:\S+ )?account|has no account",
    ),
    (
        1,
        "user_unknown",
        "name not recognized",
        r"(?:recipient|user)(?: name)? is not recognized|illegal alias|not listed in (?:the )?"
        r"(?:public )?(?:name (?:&|and) address book|directory)|no such (?:alias|list)|"
        r"ディレクトリのリストにありません|存在しません|宛先不明|benutzer unbekannt|"
        r"unbekannter (?:benutzer|empf[äa]nger)|utilisateur inconnu|destinataire inconnu|"
        r"usuario desconocido|utente sconosciuto|n'existe pas|existiert nicht",
    ),
    # -- host_unknown -----------------------------------------------------------------------
    (
        1,
        "host_unknown",
        "host unknown",
        r"\bhost (?:or domain name )?(?:not found|unknown)|unknown (?:host|domain)|"
        r"no such (?:domain|host)",
    ),
    (
        1,
        "host_unknown",
        "domain not found",
        r"domain (?:name )?(?:not found|does not exist|doesn't exist|unknown|is not valid|"
        r"not valid)|\bnxdomain\b",
    ),
    (
        1,
        "host_unknown",
        "no mail exchanger",
        r"(?:couldn't|could not|can't|cannot|unable to) find (?:any host|a mail exchanger|an? "
        r"mx|the (?:host|domain))|no mx (?:record|found|for)|mx lookup .{0,40}no relevant",
    ),
    (
        1,
        "host_unknown",
        "domain accepts no mail",
        r"null mx|doesn't receive e?mail|does not (?:receive|accept) e?mail|not accepting "
        r"(?:network )?(?:messages|mail)",
    ),
    (
        1,
        "host_unknown",
        "unrouteable address",
        r"unroutable|unrouteable|illegal host|\bno route for\b|name service error|no data "
        r"known|non-existent hosts?|no valid mx",
    ),
    (
        1,
        "host_unknown",
        "host does not exist",
        r"(?:^|\s)(?:[45]\d\d )?[a-z0-9-]+(?:\.[a-z0-9-]+)+ does not exist",
    ),
    # -- judgement: content_rejected ------------------------------------------------------
    (2, "content_rejected", "virus", r"\bvirus|malware|infected|trojan|\bworm\b"),
    (
        2,
        "content_rejected",
        "malformed message",
        r"not rfc ?\d+ compliant|header error|(?:multiple|duplicate) (?:\S+ )?(?:subject|from|"
        r"to|date|message-id|sender) (?:headers?|:)|multiple addresses in from|(?:invalid|"
        r"malformed|bad|broken) (?:header|mime|message format)|line too long|bare lf|"
        r"8-?bit data",
    ),
    (
        2,
        "content_rejected",
        "attachment refused",
        r"(?:banned|prohibited|forbidden|blocked|dangerous|unacceptable) (?:file|attachment|"
        r"extension|content)|attachment (?:type |is |was )*(?:not allowed|refused|rejected|"
        r"blocked|banned)",
    ),
    (
        2,
        "content_rejected",
        "content blocked",
        r"content presents|(?:because of|due to) (?:its |the )?content|content (?:is )?not "
        r"(?:allowed|accepted)",
    ),
    # -- judgement: sender authentication (policy_blocked) -----------------------------------
    (2, "policy_blocked", "dmarc", r"\bdmarc\b"),
    (2, "policy_blocked", "spf", r"\bspf\b|sender policy framework"),
    (2, "policy_blocked", "dkim", r"\bdkim\b|domainkeys"),
    (
        2,
        "policy_blocked",
        "authentication required",
        r"authenticat|not authori[sz]ed to send|not allowed to send (?:from|as|on behalf)",
    ),
    (
        2,
        "policy_blocked",
        "sending host not verified",
        r"\bptr\b|reverse dns|\brdns\b|reverse (?:lookup|mapping|host ?name)|"
        r"mismatches client ip|cannot find your (?:host ?name|hostname)|"
        r"invalid ip for sending|(?:helo|ehlo) .{0,40}(?:invalid|rejected|mismatch)|"
        r"unverif(?:i|y)\w* sending ips?|(?:sending|client|connecting) ip (?:address )?(?:\S+ )?"
        r"(?:is )?not (?:allowed|permitted|authori[sz]ed|verified)",
    ),
    # -- judgement: the message judged to be spam (spam_blocked) ------------------------------
    (
        2,
        "spam_blocked",
        "spam",
        r"\bspam(?!haus|cop)|\bunsolicited|\bube\b|bulk (?:e-?)?mail|junk mail|phishing",
    ),
    # -- judgement: the sending host's or domain's standing (policy_blocked) ---------------
    (
        2,
        "policy_blocked",
        "block list",
        r"black ?list|block ?list|deny ?list|\bdnsbl\b|\brbl\b|spamhaus|spamcop|sorbs|"
        r"uceprotect|barracudacentral|abuseat|listed (?:on|in|at|by) ",
    ),
    (
        2,
        "policy_blocked",
        "bad reputation",
        r"reputation|banned sending ip|unwanted (?:messages|mail|e-?mail)|user complaints|"
        r"too many complaints|\btss0\d\b|(?:ip|network) (?:address )?(?:\S+ )?(?:is |has been )?"
        r"(?:blocked|banned|blacklisted)|dynamic ip|dial-?up|residential|smtp server of your "
        r"(?:isp|provider)|use your provider'?s",
    ),
    # -- other policies (policy_blocked): only when no specific judgement was found ---------
    (
        3,
        "policy_blocked",
        "rate limit",
        r"rate limit|too many (?:\S+ ){0,2}(?:recipients|connections|messages|mails|emails)|"
        r"at a rate|"
        r"(?:daily|hourly|sending|relay) (?:\S+ )?(?:quota|limit)|(?:sent|sending) to too many|"
        r"throttl|(?:receiving|sending) (?:mail )?too (?:quickly|fast)|greylist",
    ),
    (
        3,
        "policy_blocked",
        "relay denied",
        r"relay(?:ing)? (?:access )?(?:denied|not permitted|prohibited|not allowed)|unable to "
        r"relay|not permitted to relay|relay not permitted|not allowed to relay|no relaying|"
        r"allowed rcpthosts",
    ),
    (
        3,
        "policy_blocked",
        "sender rejected",
        r"sender (?:address )?(?:rejected|denied|refused|blocked|not allowed|verify failed)|"
        r"(?:from|sender) (?:domain|address) .{0,40}(?:does not exist|not exist|invalid)|"
        r"send mail as|custom ?from",
    ),
    (
        3,
        "policy_blocked",
        "no permission",
        r"permission to post|not have permission|not open to posting|not (?:allowed|"
        r"authori[sz]ed|permitted) to (?:post|send|mail)|members only|groups\.google\.com/"
        r"support",
    ),
    (
        3,
        "policy_blocked",
        "policy",
        r"\bpolic(?:y|ies)\b|access denied|\bdenied\b|prohibited|not allowed|not permitted|"
        r"blocked|requires? (?:tls|encryption|starttls)",
    ),
    # -- time and transport -------------------------------------------------------------------
    (
        4,
        "expired",
        "expired",
        r"retry (?:time(?:out)?|period) exceeded|(?:message|envelope|delivery time) (?:has )?"
        r"expired|in the queue too long|too long in (?:the )?queue|(?:cannot send message|"
        r"could not be delivered|could not deliver|not delivered|unable to deliver|"
        r"undeliverable) (?:for|within|in) (?:the last |more than )?\d+|failed \d+ attempts|giving up after|queue lifetime|"
        r"maximum (?:queue|delivery) time",
    ),
    (
        4,
        "network_error",
        "connection failed",
        r"connection (?:timed out|refused|reset|lost|closed|dropped|broken|failed)|"
        r"lost connection|timed? ?out|\btimeout\b|(?:could|was) not (?:connect|establish)|"
        r"(?:unable|fail(?:ed)?) to (?:connect|establish)|wasn't able to establish|"
        r"did not accept our requests to connect|socket error|not responding|"
        r"no route to host|(?:network|host) (?:is )?unreachable|refused to talk to me",
    ),
    (
        4,
        "network_error",
        "routing loop",
        r"too many hops|hop count|mail loop|routing loop|loops back to myself|loop detected",
    ),
    (
        4,
        "network_error",
        "dns failure",
        r"\bdns (?:error|failure|lookup|problem)|temporary (?:dns|lookup) failure|name server",
    ),
    (4, "network_error", "tls failure", r"\btls\b.{0,30}(?:fail|error)|handshake fail"),
    # -- weak catch-alls ----------------------------------------------------------------------
    (
        5,
        "content_rejected",
        "content rejected",
        r"content (?:rejected|refused|filter)|message (?:rejected|refused) (?:by|due to) "
        r"(?:the )?(?:content|filter)",
    ),
    (
        5,
        "other",
        "system error",
        r"system (?:error|config)|internal (?:server )?error|configuration error|mailer error|"
        r"command output|procmail|temporary (?:local )?(?:failure|problem|error)|insufficient "
        r"(?:system )?(?:resources|disk|storage)|try (?:again )?later|service (?:not available|"
        r"unavailable|refused)|syntax error|improper sequence|bad sequence|not implemented|"
        r"protocol error|command (?:not recogni[sz]ed|unrecogni[sz]ed)|could not load",
    ),
    (
        5,
        "user_unknown",
        "address rejected",
        r"(?:recipient|address|mailbox|user)\S* (?:address )?(?:rejected|refused)|"
        r"rcpt.{0,10}(?:rejected|refused)",
    ),
]

#: The compiled table, one list per tier, in tier order.
TIERS: list[list[tuple[str, str, re.Pattern[str]]]] = [
    [(reason, name, re.compile(rx, re.I)) for tier, reason, name, rx in _TABLE if tier == t]
    for t in (_RECIPIENT, _JUDGEMENT, _POLICY, _TRANSPORT, _WEAK)
]


#: Index in :data:`TIERS` of the tier where the earliest phrase wins.
JUDGEMENT_TIER = 1
