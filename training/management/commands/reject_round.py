from training.management.commands._rounds import RoundDecisionCommand
from training.services.rounds import round_reject


class Command(RoundDecisionCommand):
    help = (
        "Reject the project's round that the promotion gate stopped in needs_review: the "
        "round ends (done, rejected) and the current models stay current."
    )
    decide = staticmethod(round_reject)
