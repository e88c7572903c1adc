"""The command line and what its commands run: `firsttoken` (cli.py), `firsttoken demo`
(demo.py), `firsttoken simulate` (simulate.py), and the open-loop load driver
(driver.py) with its aiohttp transport for httpx (transport.py)."""
