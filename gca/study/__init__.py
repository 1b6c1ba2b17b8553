"""The study: experiments as cached runs, their statistics and the claims ledger."""
