"""One helper module per page, named after it: `dashboard/helpers/<page>.py` holds what
`dashboard/views/<page>.py` draws (cached `digitrec` calls, figures, the page's pure logic).
`shared.py` holds what several pages read (the dataset in use, the run store, cached splits).
Widgets several pages draw are in `dashboard/components.py`.
"""
