"""The Slicer bridge: MRML nodes ↔ files, results → nodes, and the background process.

Nothing here imports ``qt`` or needs the Slicer application: ``slicer`` is imported
lazily from whichever build is present (the app, or the ``slicer-core`` wheel in tests),
so every behaviour of the Slicer module is testable outside the GUI.

>>> from VirtualBiopsyLib.slicer.slots import guess_role
>>> guess_role("P12_L_CM_MLO").slot
'DES_MLO'
"""
