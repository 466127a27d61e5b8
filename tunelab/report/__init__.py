"""What tunelab shows of its work, computed from what runs and studies wrote (above the runner).

* :mod:`tunelab.report.run_report`: a run's and a sweep's self-contained ``report.html``;
* :mod:`tunelab.report.findings`: a study's statistics from its records (claims, power, verdicts);
* :mod:`tunelab.report.findings_doc`: its section of ``docs/findings.md`` and its terminal summary;
* :mod:`tunelab.report.data_report`: ``tunelab data inspect`` (mixture, loss masks, length histograms).

The runner sits below and never imports this package: importing it registers the run and sweep
reports with the runner (:mod:`tunelab.runner.hooks`), so every run and sweep still ends by writing
its ``report.html``.
"""

from tunelab.report import run_report as _pages
from tunelab.runner.hooks import set_reporters

set_reporters(run=_pages.run_report, sweep=_pages.sweep_report)
