"""Writers of what a run counted: streams (JSON Lines, text), time series
(``timeseries``), the TUI's screen model and the replay progress bar."""
