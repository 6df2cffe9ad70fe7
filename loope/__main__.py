from loope.cli import main

main()
