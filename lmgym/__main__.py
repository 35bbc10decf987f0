from lmgym.cli import main

main()
