"""Closed-loop evaluation of policies on the simulated arm: the scripted expert, episode bookkeeping and the
``evaluate`` command."""
